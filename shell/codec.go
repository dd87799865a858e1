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
	var h pb.WatchResponse
	hb := appendWatchHead(make([]byte, 0, 64), m.head(&h))
	eb, err := m.shared.buffer()
	if err != nil {
		return nil, err
	}
	// Field 11 (events) follows fields 1 to 7, as protobuf lays them out;
	// the events of merged responses follow as more of field 11.
	if len(m.more) == 0 {
		return mem.BufferSlice{mem.SliceBuffer(hb), eb}, nil
	}
	out := make(mem.BufferSlice, 0, 2+len(m.more))
	out = append(out, mem.SliceBuffer(hb), eb)
	for _, e := range m.more {
		b, err := e.buffer()
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// appendWatchHead appends the encoding of r's fields other than its events
// (1 to 7) to b, as proto.Marshal lays them out: in field order, fields at
// their zero value left out, a header present even when empty. Written out
// by hand because it runs once per watcher per response: at 10,000
// watchers proto.Marshal of the head was a quarter of the proxy's CPU.
func appendWatchHead(b []byte, r *pb.WatchResponse) []byte {
	if h := r.Header; h != nil {
		n := 0
		for _, f := range [...]struct {
			num protowire.Number
			v   uint64
		}{{1, h.ClusterId}, {2, h.MemberId}, {3, uint64(h.Revision)}, {4, h.RaftTerm}} {
			if f.v != 0 {
				n += protowire.SizeTag(f.num) + protowire.SizeVarint(f.v)
			}
		}
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = appendVarintField(b, 1, h.ClusterId)
		b = appendVarintField(b, 2, h.MemberId)
		b = appendVarintField(b, 3, uint64(h.Revision))
		b = appendVarintField(b, 4, h.RaftTerm)
	}
	b = appendVarintField(b, 2, uint64(r.WatchId))
	b = appendVarintField(b, 3, protowire.EncodeBool(r.Created))
	b = appendVarintField(b, 4, protowire.EncodeBool(r.Canceled))
	b = appendVarintField(b, 5, uint64(r.CompactRevision))
	if r.CancelReason != "" {
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendString(b, r.CancelReason)
	}
	return appendVarintField(b, 7, protowire.EncodeBool(r.Fragment))
}

// appendVarintField appends field num with varint value v, unless v is 0.
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// sharedEncoding is the encoding of a run of events as repeated field 11 of
// a WatchResponse, made by the first sender that needs it.
type sharedEncoding struct {
	events []*mvccpb.Event
	once   sync.Once
	bytes  []byte
	buf    mem.Buffer // bytes, as the buffer every response's encoding ends with
	err    error
}

// buffer is the encoding as a gRPC buffer (made once: each conversion of
// a slice to the interface allocates).
func (e *sharedEncoding) buffer() (mem.Buffer, error) {
	if _, err := e.encoded(); err != nil {
		return nil, err
	}
	return e.buf, nil
}

func (e *sharedEncoding) encoded() ([]byte, error) {
	e.once.Do(func() {
		// Sized first, so that a long run (a catch-up brings hundreds of
		// events at once) is written into one allocation, not grown into
		// ever larger ones (a third of the proxy's CPU in a catch-up).
		n := 0
		for _, ev := range e.events {
			s := proto.Size(ev)
			n += protowire.SizeTag(11) + protowire.SizeVarint(uint64(s)) + s
		}
		b := make([]byte, 0, n)
		cached := proto.MarshalOptions{UseCachedSize: true} // the sizes just computed
		for _, ev := range e.events {
			b = protowire.AppendTag(b, 11, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(cached.Size(ev)))
			var err error
			if b, err = cached.MarshalAppend(b, ev); err != nil {
				e.err = fmt.Errorf("encoding a watch event: %w", err)
				return
			}
		}
		e.bytes, e.buf = b, mem.SliceBuffer(b)
	})
	return e.bytes, e.err
}
