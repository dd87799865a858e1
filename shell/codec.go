package shell

import (
	"fmt"
	"sync"
	"unsafe"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the default codec
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// watchCodec is the proxy server's gRPC codec. It is gRPC's own protobuf
// codec, except that the events of a watch response are encoded once and
// the bytes reused for every watcher that gets the same events: the watch
// machine hands all watchers of a range the very same slice of events, and
// only the header fields (watch ID above all) differ between their
// responses. At 10,000 watchers on a key that turns 10,000 encodings of an
// event into one.
type watchCodec struct {
	proto encoding.CodecV2

	mu    sync.Mutex
	cache map[eventsKey]*encodedEvents
	order []eventsKey // insertion order, for eviction
}

// eventsKey names a slice of events by the address of its first element
// and its length. The cache holds the slice itself, so its backing array
// cannot be freed and reused while the entry exists.
type eventsKey struct {
	first unsafe.Pointer
	n     int
}

type encodedEvents struct {
	events []*mvccpb.Event // keeps the backing array alive
	bytes  []byte
}

// codecCacheEntries bounds the cache; the slices it names are the last few
// event batches, which is all a fan-out needs.
const codecCacheEntries = 256

func newWatchCodec() *watchCodec {
	return &watchCodec{proto: encoding.GetCodecV2("proto"), cache: map[eventsKey]*encodedEvents{}}
}

func (c *watchCodec) Name() string { return "proto" }

func (c *watchCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c *watchCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*pb.WatchResponse)
	if !ok || len(r.Events) == 0 {
		return c.proto.Marshal(v)
	}
	head := &pb.WatchResponse{
		Header: r.Header, WatchId: r.WatchId, Created: r.Created, Canceled: r.Canceled,
		CompactRevision: r.CompactRevision, CancelReason: r.CancelReason, Fragment: r.Fragment,
	}
	hb, err := proto.Marshal(head)
	if err != nil {
		return nil, err
	}
	eb, err := c.events(r.Events)
	if err != nil {
		return nil, err
	}
	// Field 11 (events) follows fields 1 to 7, as protobuf lays them out.
	return mem.BufferSlice{mem.SliceBuffer(hb), mem.SliceBuffer(eb)}, nil
}

// events returns the encoding of evs as repeated field 11, from the cache
// when the same slice was encoded before.
func (c *watchCodec) events(evs []*mvccpb.Event) ([]byte, error) {
	key := eventsKey{unsafe.Pointer(&evs[0]), len(evs)}
	c.mu.Lock()
	e := c.cache[key]
	c.mu.Unlock()
	if e != nil {
		return e.bytes, nil
	}
	var b []byte
	for _, ev := range evs {
		b = protowire.AppendTag(b, 11, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(proto.Size(ev)))
		var err error
		if b, err = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(b, ev); err != nil {
			return nil, fmt.Errorf("encoding a watch event: %w", err)
		}
	}
	c.mu.Lock()
	if _, ok := c.cache[key]; !ok {
		c.cache[key] = &encodedEvents{events: evs, bytes: b}
		c.order = append(c.order, key)
		if len(c.order) > codecCacheEntries {
			delete(c.cache, c.order[0])
			c.order = c.order[1:]
		}
	}
	c.mu.Unlock()
	return b, nil
}
