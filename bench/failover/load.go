package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// clock gives every recorded time as the monotonic time since one start, so
// that the records of all targets share an axis.
type clock struct{ t0 time.Time }

func (c clock) now() time.Duration { return time.Since(c.t0) }

func newClient(endpoints []string, keepalive time.Duration) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    keepalive,
		DialKeepAliveTimeout: keepalive,
		Logger:               zap.NewNop(),
	})
}

// put is one Put the writer made.
type put struct {
	key        string
	start, end time.Duration
	rev        int64 // 0 if the put failed
	err        string
}

// writer Puts prefix<n> every interval, each with its own deadline,
// whether or not the previous ones have answered (an open loop: the
// schedule does not slow down while the target does not answer, so an
// outage is seen at the interval's resolution).
type writer struct {
	cli               *clientv3.Client
	prefix            string
	clk               clock
	interval, timeout time.Duration

	mu      sync.Mutex
	puts    []put
	lastKey string // key of the acknowledged put with the highest revision
	lastRev int64
}

// run writes until ctx ends, then waits for the puts still under way.
func (w *writer) run(ctx context.Context) {
	var inflight sync.WaitGroup
	defer inflight.Wait()
	tk := time.NewTicker(w.interval)
	defer tk.Stop()
	for n := 0; ; n++ {
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			w.put(fmt.Sprintf("%s%06d", w.prefix, n))
		}()
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

func (w *writer) put(key string) {
	p := put{key: key, start: w.clk.now()}
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	resp, err := w.cli.Put(ctx, key, "v")
	cancel()
	p.end = w.clk.now()
	if err != nil {
		p.err = err.Error()
	} else {
		p.rev = resp.Header.Revision
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.puts = append(w.puts, p)
	if p.rev > w.lastRev {
		w.lastRev, w.lastKey = p.rev, key
	}
}

// latestKey is the key of the newest acknowledged put, or prefix0 before
// there is one.
func (w *writer) latestKey() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lastKey == "" {
		return w.prefix + "000000"
	}
	return w.lastKey
}

// event is one watch event as received.
type event struct {
	rev int64
	key string
	at  time.Duration
}

type watchError struct {
	at  time.Duration
	msg string
}

// watcher watches a prefix as an application would: when the watch channel
// closes it watches again from the revision after the last event it got,
// 100 ms later.
type watcher struct {
	cli           *clientv3.Client
	prefix        string
	requireLeader bool
	clk           clock
	created       chan struct{} // closed once the first watch is created

	mu       sync.Mutex
	events   []event
	errs     []watchError
	restarts int
}

func (w *watcher) run(ctx context.Context) {
	var once sync.Once
	var next int64 // 0: from the serving member's revision at creation
	for {
		wctx, cancel := context.WithCancel(ctx)
		if w.requireLeader {
			wctx = clientv3.WithRequireLeader(wctx)
		}
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCreatedNotify()}
		if next > 0 {
			opts = append(opts, clientv3.WithRev(next))
		}
		sawErr := false
		for resp := range w.cli.Watch(wctx, w.prefix, opts...) {
			at := w.clk.now()
			if resp.Created {
				if next == 0 {
					next = resp.Header.Revision + 1
				}
				once.Do(func() { close(w.created) })
			}
			w.mu.Lock()
			if err := resp.Err(); err != nil && ctx.Err() == nil {
				w.errs = append(w.errs, watchError{at, err.Error()})
				sawErr = true
			}
			for _, ev := range resp.Events {
				w.events = append(w.events, event{ev.Kv.ModRevision, string(ev.Kv.Key), at})
				next = ev.Kv.ModRevision + 1
			}
			w.mu.Unlock()
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		w.restarts++
		if !sawErr {
			w.errs = append(w.errs, watchError{w.clk.now(), "watch channel closed without an error"})
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// lastRev is the revision of the last event received.
func (w *watcher) lastRev() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) == 0 {
		return 0
	}
	return w.events[len(w.events)-1].rev
}

// read is one serializable Get.
type read struct {
	start, end time.Duration
	rev        int64 // the serving member's store revision; 0 if failed
	err        string
}

// reader makes serializable Gets of the writer's newest acknowledged key,
// one at a time, at most one per interval.
type reader struct {
	cli               *clientv3.Client
	w                 *writer
	clk               clock
	interval, timeout time.Duration

	reads []read // owned by run until it returns
}

func (r *reader) run(ctx context.Context) {
	for ctx.Err() == nil {
		key := r.w.latestKey()
		rd := read{start: r.clk.now()}
		rctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		resp, err := r.cli.Get(rctx, key, clientv3.WithSerializable())
		cancel()
		rd.end = r.clk.now()
		if err != nil {
			rd.err = err.Error()
		} else {
			rd.rev = resp.Header.Revision
		}
		r.reads = append(r.reads, rd)
		if wait := rd.start + r.interval - r.clk.now(); wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
	}
}
