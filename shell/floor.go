package shell

import (
	"context"
	"sync/atomic"
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

// floorOf returns the floor of the connection a call came on (nil outside
// a server call).
func floorOf(ctx context.Context) *floor {
	if c := connOf(ctx); c != nil {
		return c.floor
	}
	return nil
}
