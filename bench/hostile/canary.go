package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// canary is a well-behaved client: a watch of canary/ through the target,
// and a writer putting canary/k directly on etcd. Every write's revision is
// kept with the time its Put returned and the phase it fell in; every
// event's with the time it arrived.
type canary struct {
	mu      sync.Mutex
	phase   int
	written []write
	arrived map[int64]time.Time
	dups    int
	last    int64
	err     error
}

type write struct {
	rev   int64
	at    time.Time
	phase int
}

// run watches through cli and writes with kv until ctx ends.
func (c *canary) run(ctx context.Context, cli *clientv3.Client, kv pb.KVClient, every time.Duration) error {
	c.arrived = map[int64]time.Time{}
	wch := cli.Watch(ctx, "canary/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if r, ok := <-wch; !ok || !r.Created {
		return fmt.Errorf("canary watch not created: %v", r.Err())
	}
	go func() {
		for r := range wch {
			now := time.Now()
			c.mu.Lock()
			if err := r.Err(); err != nil && c.err == nil {
				c.err = err
			}
			for _, ev := range r.Events {
				rev := ev.Kv.ModRevision
				if _, seen := c.arrived[rev]; seen || rev <= c.last {
					c.dups++
				} else {
					c.arrived[rev] = now
				}
				c.last = max(c.last, rev)
			}
			c.mu.Unlock()
		}
	}()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			r, err := kv.Put(wctx, &pb.PutRequest{Key: []byte("canary/k"), Value: fmt.Appendf(nil, "%d", n)})
			cancel()
			if err != nil {
				continue // etcd itself is not under test; a failed write has no event to wait for
			}
			c.mu.Lock()
			c.written = append(c.written, write{rev: r.Header.Revision, at: time.Now(), phase: c.phase})
			c.mu.Unlock()
		}
	}()
	return nil
}

func (c *canary) setPhase(p int) {
	c.mu.Lock()
	c.phase = p
	c.mu.Unlock()
}

// awaitAll waits up to d for an event for every write made so far.
func (c *canary) awaitAll(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		missing := 0
		for _, w := range c.written {
			if _, ok := c.arrived[w.rev]; !ok {
				missing++
			}
		}
		c.mu.Unlock()
		if missing == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// canaryFigures are the canary's figures for one phase.
type canaryFigures struct {
	writes, lost int
	p50, p99     time.Duration
}

func (c *canary) figures(phase int) canaryFigures {
	c.mu.Lock()
	defer c.mu.Unlock()
	var f canaryFigures
	var lat []time.Duration
	for _, w := range c.written {
		if w.phase != phase {
			continue
		}
		f.writes++
		at, ok := c.arrived[w.rev]
		if !ok {
			f.lost++
			continue
		}
		lat = append(lat, max(0, at.Sub(w.at)))
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		f.p50 = lat[len(lat)/2]
		f.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return f
}
