package shell_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// TestKeepAliveCoalescing: 20 client streams keep 10 leases (TTL 6) alive,
// every one asking for every lease every 100 ms for 6 s: 12,000 requests.
// Each gets exactly one answer, with a TTL etcd could report, and etcd
// renews each lease about once per TTL/3 (2 s), not once per request.
func TestKeepAliveCoalescing(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	direct := testutil.Client(t, m.ClientURL)
	ctx := testutil.Context(t, 60*time.Second)
	const leases, streams, rounds, ttl = 10, 20, 60, 6
	var ids []int64
	for range leases {
		g, err := direct.Grant(ctx, ttl)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, int64(g.ID))
	}
	lc := pb.NewLeaseClient(testutil.Dial(t, p.Addr()))
	renewedBefore := testutil.EtcdMetric(t, "etcd_debugging_lease_renewed_total")
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := lc.LeaseKeepAlive(ctx)
			if err != nil {
				errs <- err
				return
			}
			got := map[int64]int{}
			done := make(chan error, 1)
			go func() {
				for n := 0; n < leases*rounds; n++ {
					r, err := st.Recv()
					if err != nil {
						done <- err
						return
					}
					if r.TTL <= 0 || r.TTL > ttl {
						done <- fmt.Errorf("lease %x answered TTL %d", r.ID, r.TTL)
						return
					}
					got[r.ID]++
				}
				done <- nil
			}()
			for range rounds {
				for _, id := range ids {
					if err := st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
						errs <- err
						return
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err := <-done; err != nil {
				errs <- err
				return
			}
			for _, id := range ids {
				if got[id] != rounds {
					errs <- fmt.Errorf("lease %x answered %d times for %d requests", id, got[id], rounds)
					return
				}
			}
			st.CloseSend()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	took := time.Since(start)
	renewed := testutil.EtcdMetric(t, "etcd_debugging_lease_renewed_total") - renewedBefore
	// One renewal when first asked, then one per TTL/3.
	bound := float64(leases) * (took.Seconds()/(ttl/3.0) + 2)
	t.Logf("%d requests over %v: etcd renewed %v times (bound %v)", streams*leases*rounds, took, renewed, bound)
	if renewed > bound || renewed < leases {
		t.Errorf("etcd renewed the leases %v times for %d requests; want at least %d and at most %v", renewed, streams*leases*rounds, leases, bound)
	}
	st, _ := p.CoreState()
	if st.Lease.Requests != streams*leases*rounds || st.Lease.Answered != st.Lease.Requests {
		t.Errorf("lease machine: %+v", st.Lease)
	}
}

// TestKeepAliveStopsWithItsClients: once the clients stop asking, the proxy
// stops refreshing, and etcd expires the lease no later than TTL (plus
// etcd's own expiry check, every 500 ms) after the last keep-alive sent.
func TestKeepAliveStopsWithItsClients(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	direct := testutil.Client(t, m.ClientURL)
	ctx := testutil.Context(t, 30*time.Second)
	const ttl = 3
	g, err := direct.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	lc := pb.NewLeaseClient(testutil.Dial(t, p.Addr()))
	sctx, cancel := context.WithCancel(ctx)
	st, err := lc.LeaseKeepAlive(sctx)
	if err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for range 30 {
		last = time.Now()
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: int64(g.ID)}); err != nil {
			t.Fatal(err)
		}
		if r, err := st.Recv(); err != nil || r.TTL <= 0 {
			t.Fatalf("keep-alive: %v %v", r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	var expired time.Duration
	testutil.WaitUntil(t, 3*ttl*time.Second, "the lease to expire on etcd", func() bool {
		r, err := direct.TimeToLive(ctx, g.ID)
		expired = time.Since(last)
		return err == nil && r.TTL == -1
	})
	t.Logf("lease (TTL %ds) expired %v after the last keep-alive", ttl, expired)
	if bound := ttl*time.Second + 700*time.Millisecond; expired > bound {
		t.Errorf("lease expired %v after the last keep-alive; want at most %v", expired, bound)
	}
}

// TestKeepAliveAfterRevoke: a revoke through the proxy is seen by the next
// keep-alive at once, and a lease etcd never granted is answered TTL 0, as
// etcd answers.
func TestKeepAliveAfterRevoke(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	c := testutil.Client(t, p.Addr())
	ctx := testutil.Context(t, 30*time.Second)
	g, err := c.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	lc := pb.NewLeaseClient(testutil.Dial(t, p.Addr()))
	st, err := lc.LeaseKeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(id int64) *pb.LeaseKeepAliveResponse {
		t.Helper()
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask(int64(g.ID)); r.TTL <= 0 || r.TTL > 30 {
		t.Fatalf("first keep-alive: %v", r)
	}
	if r := ask(int64(g.ID)); r.TTL <= 0 {
		t.Fatalf("second keep-alive: %v", r)
	}
	if _, err := c.Revoke(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if r := ask(int64(g.ID)); r.TTL != 0 {
		t.Fatalf("keep-alive after revoke through the proxy: TTL %d, want 0", r.TTL)
	}
	if r := ask(0x1234567); r.TTL != 0 || r.ID != 0x1234567 {
		t.Fatalf("keep-alive of a lease etcd never granted: %v", r)
	}
	// clientv3's own keep-alive through the proxy works as against etcd.
	g2, err := c.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := c.KeepAliveOnce(ctx, g2.ID)
	if err != nil || ka.TTL <= 0 || ka.TTL > 5 {
		t.Fatalf("KeepAliveOnce: %v %v", ka, err)
	}
	if _, err := c.KeepAliveOnce(ctx, clientv3.LeaseID(0x7654321)); err == nil {
		t.Fatal("KeepAliveOnce of an unknown lease succeeded")
	}
}

// TestKeepAliveAcrossAbruptFailover: the member in use is cut off abruptly
// (every connection to it closed, new ones refused) while clients keep 20
// leases (TTL 5) alive through the proxy with clientv3. The keep-alives
// move to another member before any lease can expire: every lease lives,
// every key attached to one is there, every keep-alive channel is open and
// answered after the cut.
func TestKeepAliveAcrossAbruptFailover(t *testing.T) {
	cl, fws, eps := testutil.StartClusterBehindForwarders(t, 3)
	p := testutil.StartProxy(t, eps, nil)
	c := testutil.Client(t, p.Addr())
	ctx := testutil.Context(t, 60*time.Second)
	const n, ttl = 20, 5
	var (
		mu   sync.Mutex
		last = map[clientv3.LeaseID]time.Time{}
		ids  []clientv3.LeaseID
		chs  []<-chan *clientv3.LeaseKeepAliveResponse
	)
	for i := range n {
		g, err := c.Grant(ctx, ttl)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, fmt.Sprintf("leased/%d", i), "v", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		ch, err := c.KeepAlive(ctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		ids, chs = append(ids, g.ID), append(chs, ch)
	}
	closed := make(chan clientv3.LeaseID, n)
	for i, ch := range chs {
		go func() {
			for range ch {
				mu.Lock()
				last[ids[i]] = time.Now()
				mu.Unlock()
			}
			closed <- ids[i]
		}()
	}
	testutil.WaitUntil(t, 10*time.Second, "every lease kept alive through the proxy", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(last) == n
	})
	cut := time.Now()
	fws[0].Close()
	direct := testutil.Client(t, cl.Members[1].ClientURL)
	// Past a whole TTL after the cut, every lease must still be alive.
	for time.Since(cut) < (ttl+2)*time.Second {
		select {
		case id := <-closed:
			t.Fatalf("keep-alive channel of lease %x closed", id)
		case <-time.After(500 * time.Millisecond):
		}
		for _, id := range ids {
			r, err := direct.TimeToLive(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if r.TTL <= 0 {
				t.Fatalf("lease %x expired %v after the cut", id, time.Since(cut))
			}
		}
	}
	keys, err := direct.Get(ctx, "leased/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || keys.Count != n {
		t.Fatalf("leased keys after the cut: %v %v", keys, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if !last[id].After(cut.Add(time.Second)) {
			t.Errorf("lease %x: last keep-alive answer at %v, cut at %v", id, last[id], cut)
		}
	}
	if p.UpstreamMember() == fws[0].Addr() {
		t.Errorf("proxy still on the member cut off")
	}
}
