package shell

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// warmStacks runs unary calls on long-lived goroutines whose stacks have
// already grown to what a forwarded call needs.
//
// gRPC serves each call on a new goroutine with a small stack. A call the
// proxy forwards goes deep (interceptors, the handler, clientv3's retry
// layer, a new HTTP/2 stream to etcd), so the runtime grows that stack,
// copying it each time it doubles, on every call: a profile of Put under
// load spent 13% of the proxy's CPU in runtime.copystack. Here the call is
// handed to an idle worker if there is one, or to a new worker while
// there are fewer than max; otherwise it runs where it is, as before.
// Workers leave after idle time without a call, and after resetAfter
// calls (so that a stack grown by an unusual call does not live forever;
// gRPC's own stream workers do the same).
//
// Only unary calls come here: a stream lives as long as its client, and
// would hold a worker all that time.
//
// Before any of this, gRPC reads the call's request on the goroutine it
// serves the call on, which grows a fresh stack too (14% of the proxy's
// CPU under cached reads). So the server also runs gRPC's own stream
// workers (grpc.NumStreamWorkers): a stream starts on one of them if one
// is idle, on a new goroutine otherwise. Long-lived streams (watches,
// keep-alives) keep the worker they started on, so with many of them open
// every worker can be taken; unary calls then start on new goroutines
// again, and this pool still spares their handlers the growth.
type warmStacks struct {
	jobs    chan *warmJob
	quit    chan struct{}
	workers atomic.Int32
	max     int32
	idle    time.Duration
}

const (
	// warmStackWorkers bounds the workers: the unary calls in flight that
	// get a grown stack (each keeps a stack of some tens of KiB).
	warmStackWorkers = 256
	// warmStackIdle is how long a worker waits for a call before leaving.
	warmStackIdle       = 5 * time.Second
	warmStackResetAfter = 1 << 16
	// grpcStreamWorkers is the number of gRPC's stream workers.
	grpcStreamWorkers = 64
)

type warmJob struct {
	ctx     context.Context
	req     any
	handler grpc.UnaryHandler
	resp    any
	err     error
	done    chan struct{}
}

var warmJobs = sync.Pool{New: func() any { return &warmJob{done: make(chan struct{}, 1)} }}

func newWarmStacks(max int, idle time.Duration) *warmStacks {
	return &warmStacks{jobs: make(chan *warmJob), quit: make(chan struct{}), max: int32(max), idle: idle}
}

// stop ends the idle workers (once the server serves no more calls).
func (w *warmStacks) stop() { close(w.quit) }

// unary is the outermost unary server interceptor: it runs the rest of the
// chain and the handler on a worker, and waits for it.
func (w *warmStacks) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	j := warmJobs.Get().(*warmJob)
	j.ctx, j.req, j.handler = ctx, req, handler
	select {
	case w.jobs <- j:
	default:
		if w.workers.Add(1) > w.max {
			w.workers.Add(-1)
			j.run()
			break
		}
		go w.work(j)
	}
	<-j.done
	resp, err := j.resp, j.err
	*j = warmJob{done: j.done}
	warmJobs.Put(j)
	return resp, err
}

func (j *warmJob) run() {
	j.resp, j.err = j.handler(j.ctx, j.req)
	j.done <- struct{}{}
}

// work runs j, then every job handed to it, until it has been idle for
// w.idle, has run warmStackResetAfter jobs, or the proxy stops.
func (w *warmStacks) work(j *warmJob) {
	defer w.workers.Add(-1)
	j.run()
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for range warmStackResetAfter {
		select {
		case j := <-w.jobs:
			j.run()
			t.Reset(w.idle)
		case <-t.C:
			return
		case <-w.quit:
			return
		}
	}
}
