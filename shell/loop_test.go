package shell

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// blockingKV is a KV client whose Range answers only when its context
// ends, the way a member that has gone silent answers.
type blockingKV struct {
	pb.KVClient
	calls atomic.Int32
}

func (k *blockingKV) Range(ctx context.Context, _ *pb.RangeRequest, _ ...grpc.CallOption) (*pb.RangeResponse, error) {
	k.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

// refusingWatch is a Watch client that cannot open a stream.
type refusingWatch struct {
	pb.WatchClient
	opens atomic.Int32
}

func (w *refusingWatch) Watch(context.Context, ...grpc.CallOption) (pb.Watch_WatchClient, error) {
	w.opens.Add(1)
	return nil, errors.New("connection refused")
}

// refusingLease is a Lease client that cannot open a keep-alive stream.
type refusingLease struct{ pb.LeaseClient }

func (refusingLease) LeaseKeepAlive(context.Context, ...grpc.CallOption) (pb.Lease_LeaseKeepAliveClient, error) {
	return nil, errors.New("connection refused")
}

// TestLoopTimersComeFromTheClock: every timer of the loop (the node's tick,
// a revision fetch's timeout, the reconnect backoff of an upstream stream)
// runs on the injected clock, so a test or simulation drives the whole loop
// by moving a mock clock: nothing happens while it stands still, however
// long real time runs.
func TestLoopTimersComeFromTheClock(t *testing.T) {
	clk := clock.NewMock()
	kv, wc := &blockingKV{}, &refusingWatch{}
	l := newLoop(zap.NewNop(), clk, node.Config{Port: port.Config{RetryInterval: 100 * time.Millisecond}}, kv, wc, refusingLease{}, nil)
	t.Cleanup(l.close)
	q := &clientQueue{wake: make(chan struct{}, 1)}
	l.mu.Lock()
	l.clients[1] = q
	l.mu.Unlock()
	l.input(node.OpenStream{Stream: 1})
	l.input(node.WatchCreate{Stream: 1, Req: &pb.WatchCreateRequest{Key: []byte("a")}})

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not true after 10 s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// advanceUntil moves the mock clock in steps until cond holds.
	advanceUntil := func(what string, step time.Duration, limit time.Duration, cond func() bool) time.Duration {
		t.Helper()
		moved := time.Duration(0)
		for !cond() {
			if moved >= limit {
				t.Fatalf("%s: not true after moving the clock %v", what, moved)
			}
			clk.Add(step)
			moved += step
			time.Sleep(2 * time.Millisecond)
		}
		return moved
	}

	waitFor("the fetch for the create is running", func() bool { return kv.calls.Load() == 1 })
	waitFor("both upstream streams tried once", func() bool { return wc.opens.Load() == 2 })
	time.Sleep(300 * time.Millisecond) // real time passes; the mock clock does not
	if n, o := kv.calls.Load(), wc.opens.Load(); n != 1 || o != 2 {
		t.Fatalf("with the clock standing still: %d fetches, %d stream opens; want 1 and 2", n, o)
	}

	// Reconnect backoff: the next attempts come as the clock moves.
	advanceUntil("streams tried again", 10*time.Millisecond, time.Second, func() bool { return wc.opens.Load() >= 4 })

	// The fetch gives up at fetchTimeout on the clock, and the node tries
	// it again after its retry interval.
	moved := advanceUntil("the fetch retried", 100*time.Millisecond, 2*fetchTimeout, func() bool { return kv.calls.Load() == 2 })
	if moved < fetchTimeout {
		t.Errorf("the fetch was retried after the clock moved %v, before its timeout of %v", moved, fetchTimeout)
	}
	// Nothing reached the client: a create whose revision cannot be read
	// is not answered.
	if got, _ := q.take(); len(got) != 0 {
		t.Errorf("the client got %v", got)
	}
}
