package shell

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/stats"
)

// A floor is the highest revision a client connection has been answered
// at by a KV call. Reads are kept at or above it (see kvServer.Range): no
// connection sees the store go back, whether an answer comes from the
// read cache or from a member that lags the one that answered before (as
// after a failover). With --experimental-serializable-ordering one floor
// is shared by every connection, as etcd's proxy keeps one for its own
// client.
type floor struct{ rev atomic.Int64 }

func (f *floor) get() int64 {
	if f == nil {
		return 0
	}
	return f.rev.Load()
}

func (f *floor) raise(rev int64) {
	if f == nil {
		return
	}
	for {
		cur := f.rev.Load()
		if rev <= cur || f.rev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

type floorKey struct{}

// floorOf returns the floor of the connection a call came on (nil outside
// a server call).
func floorOf(ctx context.Context) *floor {
	f, _ := ctx.Value(floorKey{}).(*floor)
	return f
}

// floors is a gRPC stats handler that gives each client connection its
// floor (or all of them the shared one), and the proxy's upstream (for
// outgoing), in the connection's context that every call on it inherits:
// once per connection, not per call.
type floors struct {
	shared *floor
	up     *upstream
}

func (h floors) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	f := h.shared
	if f == nil {
		f = &floor{}
	}
	return context.WithValue(context.WithValue(ctx, floorKey{}, f), upstreamKey{}, h.up)
}

func (floors) HandleConn(context.Context, stats.ConnStats)                     {}
func (floors) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (floors) HandleRPC(context.Context, stats.RPCStats)                       {}
