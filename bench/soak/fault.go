package main

// The fault: the member the proxy uses is stopped in the middle of the
// run and restarted -down later.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
)

// fault is what happened, for the report and the samples.
type fault struct {
	mu         sync.Mutex
	member     string // name (m0..m2) and client URL of the member stopped
	stopping   time.Duration
	stopped    time.Duration // Stop returned
	restarting time.Duration
	restarted  time.Duration // Restart returned (the member serves)
	inUseAfter string        // the member the proxy used after the restart
	err        error
	down       bool
}

// state is a short note for the sample taken now.
func (f *fault) state() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.err != nil:
		return "fault failed"
	case f.down:
		return f.member + " down"
	}
	return ""
}

// run waits until at, stops the member in use, and restarts it down later.
// It returns early, restarting the member if stopped, when ctx ends.
func (f *fault) run(ctx context.Context, clk clock, cl *embedetcd.Cluster, p *proxy, at, down time.Duration) {
	fail := func(err error) {
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
		logf("fault: %v", err)
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(at - clk.now()):
	}
	var inUse string
	var err error
	for try := 0; try < 20; try++ {
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ms, serr := p.metrics(mctx)
		cancel()
		if serr == nil {
			inUse, err = memberInUse(ms)
		} else {
			err = serr
		}
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		fail(fmt.Errorf("finding the member in use: %w", err))
		return
	}
	i := memberIndex(cl, inUse)
	if i < 0 {
		fail(fmt.Errorf("the proxy uses %q, which is no member of the cluster", inUse))
		return
	}
	m := cl.Members[i]
	f.mu.Lock()
	f.member = fmt.Sprintf("%s (%s)", m.Name, m.ClientURL)
	f.stopping = clk.now()
	f.down = true
	f.mu.Unlock()
	logf("fault: stopping %s, the member the proxy uses (%s)", m.Name, inUse)
	m.Stop()
	f.mu.Lock()
	f.stopped = clk.now()
	f.mu.Unlock()
	logf("fault: %s stopped; restarting it in %v", m.Name, down)
	select {
	case <-ctx.Done():
	case <-time.After(down):
	}
	f.mu.Lock()
	f.restarting = clk.now()
	f.mu.Unlock()
	logf("fault: restarting %s", m.Name)
	if err := m.Restart(); err != nil {
		fail(fmt.Errorf("restarting %s: %w", m.Name, err))
		return
	}
	f.mu.Lock()
	f.restarted = clk.now()
	f.down = false
	f.mu.Unlock()
	logf("fault: %s restarted and serving", m.Name)
}

// noteInUse records the member the proxy uses at the end.
func (f *fault) noteInUse(ctx context.Context, p *proxy) {
	ms, err := p.metrics(ctx)
	if err != nil {
		return
	}
	if s, err := memberInUse(ms); err == nil {
		f.mu.Lock()
		f.inUseAfter = s
		f.mu.Unlock()
	}
}
