package shell

import (
	"context"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/metadata"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// readCache is the shell's side of the core's read cache: a client's Range
// becomes a CacheRead input, and the call waits for the node's answer (a
// response, or "forward"); a forwarded read's response goes back as a
// CacheFill.
type readCache struct {
	loop *loop

	next    atomic.Uint64
	mu      sync.Mutex
	waiting map[port.CallID]chan *pb.RangeResponse
}

func newReadCache(l *loop) *readCache {
	return &readCache{loop: l, waiting: map[port.CallID]chan *pb.RangeResponse{}}
}

var answerChans = sync.Pool{New: func() any { return make(chan *pb.RangeResponse, 1) }}

// read asks the cache for k and returns its response, or nil when the read
// must be forwarded. It gives up (nil) when ctx ends first.
func (c *readCache) read(ctx context.Context, k cache.Key, consistent bool, floor int64) *pb.RangeResponse {
	id := port.CallID(c.next.Add(1))
	ch := answerChans.Get().(chan *pb.RangeResponse)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	c.loop.input(node.CacheRead{Read: cache.Read{Call: id, Key: k, Consistent: consistent, Floor: floor}})
	select {
	case resp := <-ch:
		answerChans.Put(ch)
		return resp
	case <-ctx.Done():
	case <-c.loop.ctx.Done():
	}
	c.mu.Lock()
	_, pending := c.waiting[id]
	delete(c.waiting, id)
	c.mu.Unlock()
	if !pending {
		<-ch // answered meanwhile: drain before reuse
	}
	answerChans.Put(ch)
	return nil
}

// answer hands out the node's answers (loop goroutine).
func (c *readCache) answer(as []port.Answer) {
	c.mu.Lock()
	for _, a := range as {
		if ch := c.waiting[a.Call]; ch != nil {
			delete(c.waiting, a.Call)
			ch <- a.Resp
		}
	}
	c.mu.Unlock()
}

// fill hands the cache etcd's response to a forwarded read of [key, end)
// (client keyspace); the cache owns resp from then on, and the caller only
// reads it.
func (c *readCache) fill(k cache.Key, key, end []byte, resp *pb.RangeResponse) {
	c.loop.input(node.CacheFill{Key: k, Start: key, End: end, Resp: resp})
}

// cacheable reports whether a client call may be answered from the cache:
// one without an auth token (entries are never shared between identities,
// and etcd checks a token's permissions on every read) and without
// require-leader (etcd refuses such a call while it has no leader).
func cacheable(ctx context.Context) bool {
	return len(metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameGRPC)) == 0 &&
		len(metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey)) == 0
}
