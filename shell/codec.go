package shell

import (
	"fmt"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the default codec
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// watchCodec is the proxy server's gRPC codec: gRPC's own protobuf codec,
// plus two message types of the proxy's. rawMsg is a message kept as its
// encoding (passthrough.go). outMsg is a watch response whose events, when
// shared, are encoded once for every watcher that gets them. The node says
// which events those are (port.SharedEvents); only the header fields (the
// watch ID above all) differ between the watchers' responses. At 10,000
// watchers on a key that turns 10,000 encodings of an event into one.
type watchCodec struct {
	proto encoding.CodecV2
}

func newWatchCodec() *watchCodec { return &watchCodec{proto: encoding.GetCodecV2("proto")} }

func (c *watchCodec) Name() string { return "proto" }

func (c *watchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*rawMsg); ok {
		m.b = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (c *watchCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*outMsg)
	if !ok {
		if r, ok := v.(*rawMsg); ok {
			return mem.BufferSlice{mem.SliceBuffer(r.b)}, nil
		}
		return c.proto.Marshal(v)
	}
	if m.shared == nil {
		return c.proto.Marshal(m.resp)
	}
	r := m.resp
	head := &pb.WatchResponse{
		Header: r.Header, WatchId: r.WatchId, Created: r.Created, Canceled: r.Canceled,
		CompactRevision: r.CompactRevision, CancelReason: r.CancelReason, Fragment: r.Fragment,
	}
	hb, err := proto.Marshal(head)
	if err != nil {
		return nil, err
	}
	eb, err := m.shared.encoded()
	if err != nil {
		return nil, err
	}
	// Field 11 (events) follows fields 1 to 7, as protobuf lays them out.
	return mem.BufferSlice{mem.SliceBuffer(hb), mem.SliceBuffer(eb)}, nil
}

// sharedEncoding is the encoding of a run of events as repeated field 11 of
// a WatchResponse, made by the first sender that needs it.
type sharedEncoding struct {
	events []*mvccpb.Event
	once   sync.Once
	bytes  []byte
	err    error
}

func (e *sharedEncoding) encoded() ([]byte, error) {
	e.once.Do(func() {
		var b []byte
		for _, ev := range e.events {
			b = protowire.AppendTag(b, 11, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(proto.Size(ev)))
			var err error
			if b, err = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(b, ev); err != nil {
				e.err = fmt.Errorf("encoding a watch event: %w", err)
				return
			}
		}
		e.bytes = b
	})
	return e.bytes, e.err
}
