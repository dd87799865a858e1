package main

// The time series: every -sample, the proxy's RSS and goroutines, the
// client's open watches, etcd's watchers and the client errors so far.

import (
	"context"
	"os"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
)

type sample struct {
	t              time.Duration
	rssKB          int64   // -1 if unread
	goroutines     float64 // -1 if unread
	clientWatchers int64
	etcdWatchers   float64 // -1 if unread
	errors         int64
	puts, events   int64 // cumulative acknowledged puts and watch events received
	// cumulative CPU seconds of the proxy and of this process (the load
	// and etcd's three members); -1 if unread
	proxyCPU, selfCPU float64
	// stall is this process's longest scheduling delay since the last
	// sample (stall.go)
	stall time.Duration
	note  string
}

type sampler struct {
	clk   clock
	cl    *embedetcd.Cluster
	p     *proxy
	wl    *watchLoad
	w     *writeLoad
	errs  *tally
	fault *fault
	stall *stallMeter

	samples []sample // owned by run until it returns
}

func (s *sampler) take() sample {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sm := sample{t: s.clk.now(), rssKB: -1, goroutines: -1, etcdWatchers: -1, proxyCPU: -1, selfCPU: -1}
	if v, err := child.CPUSeconds(s.p.PID()); err == nil {
		sm.proxyCPU = v
	}
	if v, err := child.CPUSeconds(os.Getpid()); err == nil {
		sm.selfCPU = v
	}
	if rss, _, err := child.Memory(s.p.PID()); err == nil {
		sm.rssKB = rss
	}
	if ms, err := s.p.metrics(ctx); err == nil {
		if v, ok := ms.Sum("go_goroutines"); ok {
			sm.goroutines = v
		}
	}
	if v, ok := etcdWatchers(ctx, s.cl); ok {
		sm.etcdWatchers = v
	}
	sm.clientWatchers = s.wl.active.Load()
	sm.errors = s.errs.total.Load()
	sm.puts = s.w.ok.Load()
	sm.events = s.wl.received.Load()
	sm.note = s.fault.state()
	sm.stall = s.stall.take()
	return sm
}

// run samples now and every interval until ctx ends.
func (s *sampler) run(ctx context.Context, interval time.Duration) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		sm := s.take()
		s.samples = append(s.samples, sm)
		logf("t=%4.0fs proxy RSS %.0f MiB, %0.f goroutines; %d client watches, %.0f etcd watchers; %d client errors; bench stall %v %s",
			sm.t.Seconds(), float64(sm.rssKB)/1024, sm.goroutines, sm.clientWatchers, sm.etcdWatchers, sm.errors, sm.stall.Round(time.Millisecond), sm.note)
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}
