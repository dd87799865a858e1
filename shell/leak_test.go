package shell_test

import (
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/etcdproxy/etcdproxy/core/lease"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// After every client disconnects, the proxy is back where it was before
// they came: its goroutines (goleak against a snapshot taken after a
// warm-up round), the watchers it holds on etcd (etcd's own metric), and
// the core's watchers, groups, catch-ups, history, streams, queued bytes,
// fetches, tracked leases and cache entries.
func TestNothingLeftAfterClientsLeave(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.CacheIdleAfter = 500 * time.Millisecond })
	ctx := testutil.Context(t, 90*time.Second)

	// round opens n clients that each watch three ranges, keep a lease
	// alive and read, checks they are served, and closes them all.
	rounds := 0
	round := func(n int) {
		t.Helper()
		rounds++
		var clients []*clientv3.Client
		for i := range n {
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{p.Addr()}, DialTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
			wctx := clientv3.WithRequireLeader(ctx)
			chans := []clientv3.WatchChan{
				c.Watch(wctx, "k"), c.Watch(wctx, "p/", clientv3.WithPrefix()), c.Watch(wctx, fmt.Sprint("own/", rounds, "/", i), clientv3.WithRev(1)),
			}
			l, err := c.Grant(ctx, 5)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.KeepAlive(ctx, l.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Put(ctx, fmt.Sprint("own/", rounds, "/", i), "v", clientv3.WithLease(l.ID)); err != nil {
				t.Fatal(err)
			}
			if r := <-chans[2]; len(r.Events) != 1 {
				t.Fatalf("client %d: %+v", i, r)
			}
			for range 2 {
				if _, err := c.Get(ctx, "k", clientv3.WithSerializable()); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, c := range clients {
			c.Close()
		}
	}
	settled := func(what string, baseWatchers float64) {
		t.Helper()
		testutil.WaitUntil(t, 30*time.Second, what, func() bool {
			s, g := p.CoreState()
			return testutil.NodeEmpty(s, g) == "" && g.Lease == (lease.Gauges{}) && s.Cache.Entries == 0 &&
				testutil.EtcdWatchers(t) == baseWatchers
		})
	}

	baseWatchers := testutil.EtcdWatchers(t)
	round(1) // warm-up: connections and streams the proxy keeps for good
	settled("the warm-up round released", baseWatchers)
	snapshot := goleak.IgnoreCurrent()

	round(20)
	settled("20 clients released", baseWatchers)
	var err error
	testutil.WaitUntil(t, 30*time.Second, "goroutines back to the warm-up's", func() bool {
		err = goleak.Find(snapshot)
		return err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
