package shell_test

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// TestCoalescingAtScale creates 10,000 watchers on one key over 100 client
// connections, at different times and start revisions inside the history
// window, with writes in between. etcd must see exactly one watcher, the
// proxy must send only a handful of upstream watch creates, and every client
// watcher gets exactly the writes from its start revision on.
func TestCoalescingAtScale(t *testing.T) {
	const conns, perConn = 100, 100
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	direct := pb.NewKVClient(testutil.Dial(t, m.ClientURL))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base := testutil.EtcdWatchers(t)

	var puts []int64 // revisions of the writes to the key
	put := func(v string) {
		r, err := direct.Put(ctx, &pb.PutRequest{Key: []byte("hot"), Value: []byte(v)})
		if err != nil {
			t.Fatal(err)
		}
		puts = append(puts, r.Header.Revision)
	}
	put("v0")

	type client struct {
		st     pb.Watch_WatchClient
		starts map[int64]int64 // watch ID -> first revision it must see
		mu     sync.Mutex
		got    map[int64][]int64
	}
	rng := rand.New(rand.NewSource(1))
	clients := make([]*client, conns)
	for i := range clients {
		st, err := pb.NewWatchClient(testutil.Dial(t, p.Addr())).Watch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = &client{st: st, starts: map[int64]int64{}, got: map[int64][]int64{}}
	}
	created := make(chan struct{}, conns*perConn)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r, err := c.st.Recv()
				if err != nil {
					return
				}
				if r.Created {
					if r.Canceled {
						t.Errorf("watch refused: %v", r.CancelReason)
					}
					created <- struct{}{}
					continue
				}
				c.mu.Lock()
				for _, ev := range r.Events {
					c.got[r.WatchId] = append(c.got[r.WatchId], ev.Kv.ModRevision)
				}
				c.mu.Unlock()
			}
		}()
	}

	for round := 0; round < perConn; round++ {
		for _, c := range clients {
			// Start "now", or at one of the last few writes.
			var start int64
			if k := rng.Intn(4); k > 0 && len(puts) >= k {
				start = puts[len(puts)-k]
			}
			id := int64(round + 1)
			c.starts[id] = start
			req := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("hot"), WatchId: id, StartRevision: start}}}
			if err := c.st.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		for range clients {
			select {
			case <-created:
			case <-ctx.Done():
				t.Fatal("creates not answered")
			}
		}
		if round%10 == 9 {
			put(fmt.Sprintf("v%d", round))
		}
	}
	put("last")
	last := puts[len(puts)-1]

	// Every watcher gets exactly the writes from its start on (a watcher
	// created "now" starts after the writes before its creation, which we
	// cannot see from here, so for those only the tail is checked: no
	// duplicates, in order, ending with the last write).
	testutil.WaitUntil(t, 2*time.Minute, "every watcher received the last write", func() bool {
		for _, c := range clients {
			c.mu.Lock()
			for id := range c.starts {
				g := c.got[id]
				if len(g) == 0 || g[len(g)-1] != last {
					c.mu.Unlock()
					return false
				}
			}
			c.mu.Unlock()
		}
		return true
	})
	for ci, c := range clients {
		c.mu.Lock()
		for id, start := range c.starts {
			g := c.got[id]
			for i := 1; i < len(g); i++ {
				if g[i] <= g[i-1] {
					t.Fatalf("client %d watch %d: revisions out of order or repeated: %v", ci, id, g)
				}
			}
			if start == 0 {
				continue
			}
			var want []int64
			for _, r := range puts {
				if r >= start {
					want = append(want, r)
				}
			}
			if fmt.Sprint(g) != fmt.Sprint(want) {
				t.Fatalf("client %d watch %d from %d: got %v, want %v", ci, id, start, g, want)
			}
		}
		c.mu.Unlock()
	}

	st, g := p.CoreState()
	stats, gauges := st.Watch, g.Watch
	t.Logf("watchers %d, upstream watch creates %d (rewinds %d, catch-ups %d), open now: groups %d, catch-ups %d; etcd watchers %v; events received %d, sent %d",
		stats.Watchers, stats.GroupsOpened+stats.CatchUpsOpened, stats.Rewinds, stats.CatchUpsOpened, gauges.Groups, gauges.CatchUps, testutil.EtcdWatchers(t)-base, stats.EventsReceived, stats.EventsSent)
	if stats.Watchers != conns*perConn {
		t.Errorf("proxy counts %d watchers, want %d", stats.Watchers, conns*perConn)
	}
	// One upstream watcher; a watcher starting before the group's first
	// revision may rewind it once or twice (cancel and create again).
	if n := stats.GroupsOpened + stats.CatchUpsOpened; n > 3 {
		t.Errorf("proxy sent %d upstream watch creates, want a handful (at most 3)", n)
	}
	if gauges.Groups != 1 || gauges.CatchUps != 0 {
		t.Errorf("upstream watches open: %d groups, %d catch-ups; want 1 group", gauges.Groups, gauges.CatchUps)
	}
	if n := testutil.EtcdWatchers(t) - base; n != 1 {
		t.Errorf("etcd has %v watchers for the proxy, want 1", n)
	}
	body := metricsText(t, p.Addr())
	if !strings.Contains(body, fmt.Sprintf("etcd_grpc_proxy_watchers_coalescing_total %d", conns*perConn-1)) {
		t.Errorf("metrics do not show %d coalescing watchers", conns*perConn-1)
	}

	for _, c := range clients {
		_ = c.st.CloseSend()
	}
	cancel()
	wg.Wait()
	testutil.WaitUntil(t, 10*time.Second, "nothing left once every client is gone", func() bool {
		return testutil.NodeEmpty(p.CoreState()) == ""
	})
	testutil.WaitUntil(t, 10*time.Second, "etcd's watcher released", func() bool { return testutil.EtcdWatchers(t)-base == 0 })
}

func metricsText(t *testing.T, addr string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/proxy/metrics")
	return body
}
