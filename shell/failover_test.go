package shell_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/netfault"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// failoverBound is the longest a client may see requests through the proxy
// fail after the member in use stops.
const failoverBound = 2 * time.Second

// A fault makes the member the proxy uses fail in one way: inject starts it
// (it may block; the test goes on writing meanwhile) and heal ends it.
type fault struct {
	name   string
	reason string // the failover's reason, as counted in the metric
	inject func(cl *embedetcd.Cluster, m *embedetcd.Member, fw *netfault.Forwarder)
	heal   func(cl *embedetcd.Cluster, m *embedetcd.Member, fw *netfault.Forwarder)
}

var (
	stopped = fault{name: "stopped", reason: "unreachable",
		inject: func(_ *embedetcd.Cluster, m *embedetcd.Member, _ *netfault.Forwarder) { m.Stop() },
		heal: func(_ *embedetcd.Cluster, m *embedetcd.Member, _ *netfault.Forwarder) {
			if err := m.Restart(); err != nil {
				panic(err)
			}
		}}
	silent = fault{name: "silent", reason: "silent",
		inject: func(_ *embedetcd.Cluster, _ *embedetcd.Member, fw *netfault.Forwarder) { fw.Silence() },
		heal:   func(_ *embedetcd.Cluster, _ *embedetcd.Member, fw *netfault.Forwarder) { fw.Resume() }}
	isolated = fault{name: "isolated", reason: "", // no leader, or behind: whichever etcd shows first
		inject: func(cl *embedetcd.Cluster, m *embedetcd.Member, _ *netfault.Forwarder) { cl.Isolate(m) },
		heal:   func(cl *embedetcd.Cluster, m *embedetcd.Member, _ *netfault.Forwarder) { cl.Heal(m) }}
)

// TestFailover stops the member the proxy forwards to, under a steady stream
// of writes through the proxy and a watch through the proxy, and measures
// how long writes fail. The proxy must switch to another member within
// failoverBound, and the watch must see every write exactly once, in order.
func TestFailover(t *testing.T) { testFailover(t, stopped) }

// TestFailoverSilentMember: the member in use stops answering, and nothing
// is closed or reset (its host or the network path died). The proxy's
// probes go unanswered, and it moves within failoverBound.
func TestFailoverSilentMember(t *testing.T) { testFailover(t, silent) }

// TestFailoverIsolatedMember: the member in use is cut off from its peers.
// It keeps answering on its client port, but loses its leader and falls
// behind while the other two keep taking writes. The proxy moves once the
// member reports no leader, or is behind, for its bound; etcd's election
// timeout (1 s here) comes on top, so the bound is larger.
func TestFailoverIsolatedMember(t *testing.T) { testFailover(t, isolated) }

func testFailover(t *testing.T, f fault) {
	// Every member behind a forwarder; the proxy starts on the first.
	cl, fws, eps := testutil.StartClusterBehindForwarders(t, 3)
	p := testutil.StartProxy(t, eps, nil)
	c := testutil.Client(t, p.Addr())
	ctx := testutil.Context(t, 90*time.Second)

	first, err := c.Put(ctx, "w/0", "0")
	if err != nil {
		t.Fatal(err)
	}
	wch := c.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision))
	// A watch that asks for a leader, as Kubernetes' are: the proxy moves
	// to a member with a leader before etcd would end it.
	lch := c.Watch(clientv3.WithRequireLeader(ctx), "w/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision))

	// A lease kept alive through the proxy: its keep-alive stream must
	// move with the proxy, soon enough for the lease to live.
	lease, err := c.Grant(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	kach, err := c.KeepAlive(ctx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	var kaMu sync.Mutex
	var lastKA time.Time
	go func() {
		for range kach {
			kaMu.Lock()
			lastKA = time.Now()
			kaMu.Unlock()
		}
	}()

	inUse := p.UpstreamMember()
	if inUse != fws[0].Addr() {
		t.Fatalf("proxy forwards to %q, not the first endpoint %s", inUse, eps[0])
	}
	victim := cl.Members[0]
	bound := failoverBound
	if f.name == "isolated" {
		bound += 2 * time.Second // etcd's randomized election timeout, 1-2 s
	}

	// Writes every 10ms, each with a short deadline, before, during and
	// after the fault. The outage is the longest run of failed writes:
	// from the start of the first failed write to the end of the next
	// good one.
	var (
		written    = 1
		faultDone  = make(chan struct{})
		failSince  time.Time
		window     time.Duration
		failures   int
		arrivals   []time.Time
		arrivalsMu sync.Mutex
	)
	// Record when each event of a second plain watch arrives, for the
	// longest stall.
	sch := c.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision+1))
	stallDone := make(chan struct{})
	go func() {
		defer close(stallDone)
		for wr := range sch {
			arrivalsMu.Lock()
			for range wr.Events {
				arrivals = append(arrivals, time.Now())
			}
			arrivalsMu.Unlock()
		}
	}()
	// A write caught in flight on the failed member gets Unavailable once
	// the proxy moves, long before its own generous deadline.
	type inflight struct {
		err  error
		took time.Duration
	}
	caught := make(chan inflight, 1)
	var faultAt time.Time
	for i, after := 1, 0; after < 100; i++ {
		if i == 20 {
			faultAt = time.Now()
			go func() {
				f.inject(cl, victim, fws[0])
				close(faultDone)
				start := time.Now()
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_, err := c.Put(rctx, "inflight", "x")
				caught <- inflight{err, time.Since(start)}
			}()
		}
		select {
		case <-faultDone:
			after++
		default:
		}
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := c.Put(rctx, fmt.Sprintf("w/%d", written), fmt.Sprint(written))
		cancel()
		switch {
		case err != nil && i < 20:
			t.Fatalf("write before the fault: %v", err)
		case err != nil:
			failures++
			if failSince.IsZero() {
				failSince = start
			}
			if time.Since(failSince) > 15*time.Second {
				t.Fatalf("writes failing for %v: %v", time.Since(failSince), err)
			}
		default:
			written++
			if !failSince.IsZero() {
				window = max(window, time.Since(failSince))
				failSince = time.Time{}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	now := p.UpstreamMember()
	// Still during the fault: the lease's keep-alives come through the
	// proxy again (its stream moved with the proxy), and the lease lives.
	testutil.WaitUntil(t, 10*time.Second, "a keep-alive answered through the proxy after the switch", func() bool {
		kaMu.Lock()
		defer kaMu.Unlock()
		return lastKA.After(faultAt.Add(bound))
	})
	ttl, err := testutil.Client(t, cl.Members[1].ClientURL).TimeToLive(ctx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL <= 0 {
		t.Errorf("lease kept alive through the proxy expired: TTL %d", ttl.TTL)
	}
	// The member comes back; the proxy stays where it is (no flapping).
	f.heal(cl, victim, fws[0])
	for range 100 {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Put(rctx, fmt.Sprintf("w/%d", written), fmt.Sprint(written))
		cancel()
		if err != nil {
			t.Fatalf("write after the member came back: %v", err)
		}
		written++
		time.Sleep(10 * time.Millisecond)
	}
	if now == inUse || now == "" {
		t.Errorf("proxy still forwards to %q after it went %s", now, f.name)
	}
	if back := p.UpstreamMember(); back != now {
		t.Errorf("proxy moved from %s to %s after the member came back", now, back)
	}
	t.Logf("member %s %s: %d failed writes, longest outage %v (bound %v), %d writes in all",
		inUse, f.name, failures, window, bound, written)
	if in := <-caught; in.took > bound || (in.err != nil && status.Code(in.err) != codes.Unavailable) {
		t.Errorf("a write made just after the member went %s returned after %v with %v; want Unavailable or success within %v", f.name, in.took, in.err, bound)
	} else {
		t.Logf("a write made just after the member went %s returned after %v: %v", f.name, in.took, in.err)
	}
	// The switch is counted, under its reason.
	metrics := metricsText(t, p.Addr())
	counted := 0
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "etcdproxy_upstream_failovers_total{") && !strings.HasSuffix(line, " 0") {
			counted++
			if f.reason != "" && !strings.Contains(line, `reason="`+f.reason+`"`) {
				t.Errorf("failover counted as %s; want reason %q", line, f.reason)
			}
		}
	}
	if counted != 1 || !strings.Contains(metrics, `etcdproxy_upstream_member_in_use{member="`+eps[1]+`"} 1`) && !strings.Contains(metrics, `etcdproxy_upstream_member_in_use{member="`+eps[2]+`"} 1`) {
		t.Errorf("failover metrics:\n%s", grepLines(metrics, "etcdproxy_upstream_"))
	}
	if window > bound {
		t.Errorf("outage window %v exceeds %v", window, bound)
	}

	// The watch that crossed the switch (clientv3 resumes it from its last
	// revision) must see exactly what a watch made afterwards directly on a
	// surviving member sees: the same events at the same revisions, each
	// once, in order. A write that timed out may still have been applied and
	// then retried, so keys can repeat; revisions cannot.
	last, err := c.Get(ctx, "w/0")
	if err != nil {
		t.Fatal(err)
	}
	end := last.Header.Revision
	want := collect(t, ctx, testutil.Client(t, cl.Members[1].ClientURL).Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision)), end)
	got := collect(t, ctx, wch, end)
	if len(want) < written {
		t.Fatalf("direct watch saw %d events for %d writes", len(want), written)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("watch through the proxy differs from a direct watch:\n proxy:  %d events %q\n direct: %d events %q", len(got), got, len(want), want)
	}
	if got := collect(t, ctx, lch, end); !slices.Equal(got, want) {
		t.Fatalf("require-leader watch through the proxy differs from a direct watch:\n proxy:  %d events %q\n direct: %d events %q", len(got), got, len(want), want)
	}
	testutil.WaitUntil(t, 10*time.Second, "the stall watch to reach the last write", func() bool {
		arrivalsMu.Lock()
		defer arrivalsMu.Unlock()
		return len(arrivals) >= len(want)-1
	})
	arrivalsMu.Lock()
	var stall time.Duration
	for i := 1; i < len(arrivals); i++ {
		stall = max(stall, arrivals[i].Sub(arrivals[i-1]))
	}
	arrivalsMu.Unlock()
	t.Logf("longest watch stall %v", stall)
	if stall > bound+time.Second {
		t.Errorf("a watch through the proxy stalled %v", stall)
	}
}

// grepLines returns the lines of s that start with prefix.
func grepLines(s, prefix string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// collect reads a watch until it has delivered every event up to revision
// end, and returns them as "revision key=value".
func collect(t *testing.T, ctx context.Context, wch clientv3.WatchChan, end int64) []string {
	t.Helper()
	var out []string
	var rev int64
	for rev < end {
		select {
		case wr, ok := <-wch:
			if !ok {
				t.Fatalf("watch closed at revision %d of %d", rev, end)
			}
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			for _, ev := range wr.Events {
				out = append(out, fmt.Sprintf("%d %s=%s", ev.Kv.ModRevision, ev.Kv.Key, ev.Kv.Value))
				rev = ev.Kv.ModRevision
			}
		case <-ctx.Done():
			t.Fatalf("watch delivered up to revision %d of %d", rev, end)
		}
	}
	return out
}

// TestRequireLeaderWithoutQuorum: when no member has a leader (two of three
// stopped), the proxy has nowhere to go. A watch that asked for a leader
// then ends with etcd's "no leader" error, as a direct one on the same
// member does, and a new one is refused; a plain watch stays open and
// resumes when the cluster is back.
func TestRequireLeaderWithoutQuorum(t *testing.T) {
	cl, err := embedetcd.StartCluster(t.TempDir(), 3, embedetcd.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	p := testutil.StartProxy(t, cl.Endpoints(), nil)
	c := testutil.Client(t, p.Addr())
	direct := testutil.Client(t, cl.Members[0].ClientURL)
	ctx := testutil.Context(t, 60*time.Second)
	if _, err := c.Put(ctx, "k", "v0"); err != nil {
		t.Fatal(err)
	}
	plain := c.Watch(ctx, "k")
	viaProxy := c.Watch(clientv3.WithRequireLeader(ctx), "k")
	viaDirect := direct.Watch(clientv3.WithRequireLeader(ctx), "k")
	v1, err := c.Put(ctx, "k", "v1")
	if err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]clientv3.WatchChan{"plain": plain, "proxy": viaProxy, "direct": viaDirect} {
		if got := collect(t, ctx, ch, v1.Header.Revision); !slices.Equal(got, []string{fmt.Sprintf("%d k=v1", v1.Header.Revision)}) {
			t.Fatalf("%s watch: %v", name, got)
		}
	}
	cl.Members[1].Stop()
	cl.Members[2].Stop()

	ended := func(name string, ch clientv3.WatchChan) error {
		t.Helper()
		for {
			select {
			case wr, ok := <-ch:
				if !ok {
					t.Fatalf("%s watch closed with no error", name)
				}
				if err := wr.Err(); err != nil {
					return err
				}
			case <-ctx.Done():
				t.Fatalf("%s watch still open", name)
			}
		}
	}
	start := time.Now()
	errDirect := ended("direct", viaDirect)
	errProxy := ended("proxy", viaProxy)
	t.Logf("direct require-leader watch ended with %q; through the proxy %q, %v after the stop", errDirect, errProxy, time.Since(start))
	if !errors.Is(errProxy, rpctypes.ErrNoLeader) || !errors.Is(errDirect, rpctypes.ErrNoLeader) {
		t.Fatalf("require-leader watch ended with %v through the proxy, %v direct", errProxy, errDirect)
	}
	// The proxy stayed, and says the member in use has failed with no
	// other to move to.
	if m := metricsText(t, p.Addr()); !strings.Contains(m, "\netcdproxy_upstream_member_in_use_failed 1\n") {
		t.Errorf("metrics while no member has a leader:\n%s", grepLines(m, "etcdproxy_upstream_"))
	}
	// A new one is refused while the member has no leader.
	if err := ended("new proxy", c.Watch(clientv3.WithRequireLeader(ctx), "k")); !errors.Is(err, rpctypes.ErrNoLeader) {
		t.Fatalf("new require-leader watch: %v", err)
	}
	// The plain watch is still open and sees what comes after quorum is back.
	for _, m := range cl.Members[1:] {
		if err := m.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	var put *clientv3.PutResponse
	testutil.WaitUntil(t, 20*time.Second, "a write through the proxy", func() bool {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		put, err = c.Put(rctx, "k", "v2")
		return err == nil
	})
	if got := collect(t, ctx, plain, put.Header.Revision); got[len(got)-1] != fmt.Sprintf("%d k=v2", put.Header.Revision) {
		t.Fatalf("plain watch after quorum came back: %v", got)
	}
}
