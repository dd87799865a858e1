package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// The idle section: what an idle watcher and an idle lease cost the
// target in memory. Through each fresh target, with the suite's own
// clients: the target's RSS once settled (read every 250 ms until two
// reads differ by under 0.5%, at most -idle-settle), then again after
// each step: -idle-conns connections opened, each with one Watch and one
// LeaseKeepAlive stream; -idle-watchers watches created on as many
// distinct keys that nothing writes (spread over the streams); then
// -idle-leases leases granted through the target (TTL -idle-lease-ttl)
// and each kept alive on its connection's stream, once at once and then
// every TTL/3, as clientv3 does. Per step the RSS difference over the
// watchers, the leases or the connections it added. RSS, not the Go heap:
// it is what the process costs the machine, and for a Go process it holds
// garbage not yet collected (up to the heap's size again at GOGC=100) and
// freed memory the runtime has not yet returned, so a step's figure can be
// above the live bytes it added, or even below zero. After the run the
// leases are revoked directly on etcd (but for direct's own member). The ceiling is the watch ceiling:
// one upstream watch per key, keep-alive streams relayed as bytes (one
// upstream stream per client stream). It keeps nothing per lease, so its
// per-lease figure is that floor of garbage and unreturned memory (here,
// of relaying the grants and keep-alives). For direct the target is a
// fresh etcd member of the section's own (the leases are granted there),
// not the suite's: that one's RSS still moves with the garbage of the
// sections before.

var (
	idleWatchers, idleLeases, idleConns int
	idleLeaseTTL                        int64
	idleSettle                          time.Duration
)

func init() {
	register(&section{
		name:    "idle",
		ceiling: "watch",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&idleWatchers, "idle-watchers", 10000, "idle: watches on distinct keys held idle")
			fs.IntVar(&idleLeases, "idle-leases", 10000, "idle: leases granted and kept alive")
			fs.IntVar(&idleConns, "idle-conns", 100, "idle: connections (one Watch and one LeaseKeepAlive stream each)")
			fs.Int64Var(&idleLeaseTTL, "idle-lease-ttl", 60, "idle: the leases' TTL in seconds (kept alive every TTL/3)")
			fs.DurationVar(&idleSettle, "idle-settle", 3*time.Second, "idle: the longest wait for the target's RSS to settle after each step")
		},
		quick: map[string]string{"idle-watchers": "5000", "idle-leases": "2000", "idle-settle": "1s"},
		check: func(options) error {
			if idleWatchers < 1 || idleLeases < 1 || idleConns < 1 || idleLeaseTTL < 3 || idleSettle <= 0 {
				return errors.New("-idle-watchers, -idle-leases, -idle-conns and -idle-settle must be positive, -idle-lease-ttl at least 3")
			}
			return nil
		},
		each: runIdle,
		about: func(options) string {
			return fmt.Sprintf("target RSS (not heap: Go garbage and unreturned memory included) settled after each step: %d connections each with a Watch and a LeaseKeepAlive stream, then %d idle watches on distinct keys, then %d leases (TTL %d s) kept alive every TTL/3 over those streams; per connection, watcher and lease: the step's RSS growth over its count; direct is a fresh etcd member of its own. The issue's target for etcdproxy: ≤1 KiB per idle watcher. The ceiling is the watch ceiling (one upstream watch per key; keep-alive streams relayed as bytes, so it keeps nothing per lease: its per-lease figure is the floor of garbage and unreturned memory a step leaves)",
				idleConns, idleWatchers, idleLeases, idleLeaseTTL)
		},
	})
}

// settledRSS waits until pid's RSS settles (two reads 250 ms apart within
// 0.5%), at most idleSettle, and returns it in KiB.
func settledRSS(pid int) int64 {
	deadline := time.Now().Add(idleSettle)
	last, _, _ := child.Memory(pid)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		rss, _, _ := child.Memory(pid)
		d := rss - last
		last = rss
		if d < 0 {
			d = -d
		}
		if d*200 <= rss {
			break
		}
	}
	return last
}

// idleConn is one client connection with its two streams.
type idleConn struct {
	conn   *grpc.ClientConn
	watch  pb.Watch_WatchClient
	ka     pb.Lease_LeaseKeepAliveClient
	kaMu   sync.Mutex // one Send at a time on ka
	leases []int64
}

func runIdle(ctx context.Context, o options, res *results, t target, etcd member) error {
	if t.name == "direct" {
		proc, url, err := o.bins().StartEtcd("etcd-idle", "")
		if err != nil {
			return err
		}
		defer func() {
			proc.Stop()
			_ = os.RemoveAll(filepath.Join(o.dir, "etcd-idle-data")) // StartEtcd's data directory
		}()
		etcd = member{proc: proc, url: url}
		t.endpoint = url
	}
	pid := t.cpuProc(etcd).PID()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sec := fmt.Sprintf("idle, %d watchers and %d leases over %d connections", idleWatchers, idleLeases, idleConns)
	rssFresh := settledRSS(pid)

	var created, refused, kept, lost atomic.Int64
	conns := make([]*idleConn, idleConns)
	var recvs sync.WaitGroup
	for i := range conns {
		conn, err := probe.Dial(t.endpoint)
		if err != nil {
			return err
		}
		defer conn.Close()
		c := &idleConn{conn: conn}
		if c.watch, err = pb.NewWatchClient(conn).Watch(ctx); err != nil {
			return err
		}
		if c.ka, err = pb.NewLeaseClient(conn).LeaseKeepAlive(ctx); err != nil {
			return err
		}
		conns[i] = c
		recvs.Add(2)
		go func() {
			defer recvs.Done()
			for {
				r, err := c.watch.Recv()
				if err != nil {
					return
				}
				switch {
				case r.Created && !r.Canceled:
					created.Add(1)
				case r.Canceled:
					refused.Add(1)
				}
			}
		}()
		go func() {
			defer recvs.Done()
			for {
				r, err := c.ka.Recv()
				if err != nil {
					return
				}
				if r.TTL > 0 {
					kept.Add(1)
				} else {
					lost.Add(1)
				}
			}
		}()
	}
	rssConns := settledRSS(pid)

	keyPrefix := fmt.Sprintf("suite/idle/%s/", t.name)
	err := forEachConn(conns, idleWatchers, func(c *idleConn, i int) error {
		return c.watch.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
			CreateRequest: &pb.WatchCreateRequest{Key: fmt.Appendf(nil, "%s%06d", keyPrefix, i)}}})
	})
	if err != nil {
		return err
	}
	if err := await(func() bool { return created.Load()+refused.Load() >= int64(idleWatchers) }); err != nil {
		return fmt.Errorf("%d of %d watches created, %d refused: %w", created.Load(), idleWatchers, refused.Load(), err)
	}
	rssWatchers := settledRSS(pid)

	var granted []int64
	var mu sync.Mutex
	err = forEachConn(conns, idleLeases, func(c *idleConn, _ int) error {
		r, err := pb.NewLeaseClient(c.conn).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: idleLeaseTTL})
		if err != nil {
			return err
		}
		mu.Lock()
		c.leases = append(c.leases, r.ID)
		granted = append(granted, r.ID)
		mu.Unlock()
		return nil
	})
	if t.name != "direct" { // direct's member goes away with them
		defer revokeLeases(etcd, granted)
	}
	if err != nil {
		return fmt.Errorf("granting leases: %w", err)
	}
	keepAlive := func() {
		for _, c := range conns {
			c.kaMu.Lock()
			for _, id := range c.leases {
				if c.ka.Send(&pb.LeaseKeepAliveRequest{ID: id}) != nil {
					break
				}
			}
			c.kaMu.Unlock()
		}
	}
	keepAlive()
	go func() {
		tick := time.NewTicker(time.Duration(idleLeaseTTL) * time.Second / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				keepAlive()
			}
		}
	}()
	if err := await(func() bool { return kept.Load()+lost.Load() >= int64(idleLeases) }); err != nil {
		return fmt.Errorf("%d of %d leases kept alive, %d not found: %w", kept.Load(), idleLeases, lost.Load(), err)
	}
	rssLeases := settledRSS(pid)
	cancel()
	recvs.Wait()

	perKB := func(after, before int64, n int) float64 { return float64(after-before) * 1024 / float64(n) }
	child.Logf("%s through %s: RSS %d KiB fresh, %d with the connections, %d with the watchers, %d with the leases", sec, t.name, rssFresh, rssConns, rssWatchers, rssLeases)
	res.set(sec, "RSS before any client MiB", "%.1f", false, t.name, float64(rssFresh)/1024)
	res.set(sec, "RSS per connection (a Watch and a LeaseKeepAlive stream) KiB", "%.0f", false, t.name, perKB(rssConns, rssFresh, idleConns)/1024)
	res.set(sec, "RSS per idle watcher B (etcdproxy target ≤1024)", "%.0f", false, t.name, perKB(rssWatchers, rssConns, idleWatchers))
	res.set(sec, "RSS per idle lease kept alive B", "%.0f", false, t.name, perKB(rssLeases, rssWatchers, idleLeases))
	res.set(sec, "RSS with all of them MiB", "%.1f", false, t.name, float64(rssLeases)/1024)
	res.set(sec, "watches not created, leases not kept alive", "%.0f", false, t.name, float64(refused.Load()+lost.Load()))
	return nil
}

// forEachConn calls fn for i in [0, n) on connection i mod len(conns),
// each connection's calls in order, the connections at once.
func forEachConn(conns []*idleConn, n int, fn func(c *idleConn, i int) error) error {
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for ci, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := ci; i < n; i += len(conns) {
				if err := fn(c, i); err != nil {
					errs[ci] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// await polls cond until it holds, for at most a minute.
func await(cond func() bool) error {
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// revokeLeases revokes the section's leases directly on etcd, so that
// their expiry does not land in a later section.
func revokeLeases(etcd member, ids []int64) {
	conn, err := probe.Dial(etcd.url)
	if err != nil {
		child.Logf("idle: leases not revoked: %v", err)
		return
	}
	defer conn.Close()
	lc := pb.NewLeaseClient(conn)
	began := time.Now()
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := lc.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: ids[i]}); err != nil {
					failed.Add(1)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	child.Logf("idle: %d leases revoked on etcd in %v, %d failed", len(ids), time.Since(began).Round(time.Millisecond), failed.Load())
}
