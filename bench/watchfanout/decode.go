package main

import (
	"context"
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The client reads watch responses with a decoder of its own, which takes
// from each response only what the tool checks: the watch ID, created,
// canceled, the cancel reason, the compact revision and each event's
// ModRevision. gRPC's proto codec builds every event, its key-value and
// their byte slices (four allocations an event), which made this tool
// use more than one of the machine's two cores at 10,000 watchers and so
// bound what any target could show. The checks are the same; every target
// is read the same way. TestWatchRespDecode checks it against
// proto.Unmarshal.

// watchResp is a watch response as the tool reads it.
type watchResp struct {
	WatchId         int64
	Created         bool
	Canceled        bool
	CompactRevision int64
	CancelReason    string
	Revs            []int64 // ModRevision of each event, in order

	scratch []byte // the response's bytes when gRPC hands them in pieces
}

// decode reads b, a WatchResponse's encoding, into r (its Revs reused).
func (r *watchResp) decode(b []byte) error {
	revs := r.Revs[:0]
	*r = watchResp{scratch: r.scratch}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && num >= 2 && num <= 5:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 2:
				r.WatchId = int64(v)
			case 3:
				r.Created = v != 0
			case 4:
				r.Canceled = v != 0
			case 5:
				r.CompactRevision = int64(v)
			}
		case typ == protowire.BytesType && (num == 6 || num == 11):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			if num == 6 {
				r.CancelReason = string(v)
				continue
			}
			rev, err := eventModRevision(v)
			if err != nil {
				return err
			}
			revs = append(revs, rev)
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	r.Revs = revs
	return nil
}

// eventModRevision returns the ModRevision of an Event's key-value (field
// 2 of the event, field 3 of the key-value).
func eventModRevision(ev []byte) (int64, error) {
	kv, err := field(ev, 2, protowire.BytesType)
	if err != nil || kv == nil {
		return 0, errors.Join(errors.New("watch event without a key-value"), err)
	}
	v, err := field(kv, 3, protowire.VarintType)
	if err != nil {
		return 0, err
	}
	if v == nil {
		return 0, nil // ModRevision 0 is left out of the encoding
	}
	rev, n := protowire.ConsumeVarint(v)
	if n < 0 {
		return 0, protowire.ParseError(n)
	}
	return int64(rev), nil
}

// field returns the last occurrence of field num in b (a varint field: its
// value's bytes onwards), nil if there is none.
func field(b []byte, num protowire.Number, want protowire.Type) ([]byte, error) {
	var found []byte
	for len(b) > 0 {
		n2, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if n2 == num && typ == want {
			if typ == protowire.BytesType {
				v, n := protowire.ConsumeBytes(b)
				if n < 0 {
					return nil, protowire.ParseError(n)
				}
				found = v
				b = b[n:]
				continue
			}
			found = b
		}
		n = protowire.ConsumeFieldValue(n2, typ, b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return found, nil
}

// watchCodec encodes requests as gRPC's proto codec does and decodes
// responses into watchResp.
type watchCodec struct{}

func (watchCodec) Name() string { return "proto" }

func (watchCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("watchfanout: cannot encode %T", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (watchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*watchResp)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}
	if len(data) == 1 {
		return r.decode(data[0].ReadOnlyData())
	}
	r.scratch = r.scratch[:0]
	for _, b := range data {
		r.scratch = append(r.scratch, b.ReadOnlyData()...)
	}
	return r.decode(r.scratch)
}

// watchStream is a Watch stream whose responses are read as watchResp.
type watchStream struct{ grpc.ClientStream }

func openWatch(ctx context.Context, conn *grpc.ClientConn) (*watchStream, error) {
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true},
		"/etcdserverpb.Watch/Watch", grpc.ForceCodecV2(watchCodec{}))
	if err != nil {
		return nil, err
	}
	return &watchStream{st}, nil
}

func (s *watchStream) Send(r *pb.WatchRequest) error { return s.SendMsg(r) }

// Recv reads the next response into r.
func (s *watchStream) Recv(r *watchResp) error { return s.RecvMsg(r) }
