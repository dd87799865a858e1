package shell_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// failoverBound is the longest a client may see requests through the proxy
// fail after the member in use stops.
const failoverBound = 2 * time.Second

// TestFailover stops the member the proxy forwards to, under a steady stream
// of writes through the proxy and a watch through the proxy, and measures
// how long writes fail. The proxy must switch to another member within
// failoverBound, and the watch must see every write exactly once, in order.
func TestFailover(t *testing.T) {
	cl, err := embedetcd.StartCluster(t.TempDir(), 3, embedetcd.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	p := testutil.StartProxy(t, cl.Endpoints(), nil)
	c := testutil.Client(t, p.Addr())
	ctx := testutil.Context(t, 60*time.Second)

	first, err := c.Put(ctx, "w/0", "0")
	if err != nil {
		t.Fatal(err)
	}
	wch := c.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision))

	inUse := p.UpstreamMember()
	var victim *embedetcd.Member
	for _, m := range cl.Members {
		if strings.HasSuffix(m.ClientURL, "//"+inUse) {
			victim = m
		}
	}
	if victim == nil {
		t.Fatalf("proxy forwards to %q, which is no member of %v", inUse, cl.Endpoints())
	}

	// Writes every 10ms, each with a short deadline, before, during and
	// after the stop. The outage is the longest run of failed writes: from
	// the start of the first failed write to the end of the next good one.
	var (
		written   = 1
		stopDone  = make(chan struct{})
		failSince time.Time
		window    time.Duration
		failures  int
	)
	for i, after := 1, 0; after < 20; i++ {
		if i == 20 {
			go func() { victim.Stop(); close(stopDone) }()
		}
		select {
		case <-stopDone:
			after++
		default:
		}
		start := time.Now()
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := c.Put(rctx, fmt.Sprintf("w/%d", written), fmt.Sprint(written))
		cancel()
		switch {
		case err != nil && i < 20:
			t.Fatalf("write before the stop: %v", err)
		case err != nil:
			failures++
			if failSince.IsZero() {
				failSince = start
			}
			if time.Since(failSince) > 10*time.Second {
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
	t.Logf("member %s stopped: %d failed writes, longest outage %v (bound %v), %d writes in all",
		inUse, failures, window, failoverBound, written)
	if window > failoverBound {
		t.Errorf("outage window %v exceeds %v", window, failoverBound)
	}
	if now := p.UpstreamMember(); now == inUse || now == "" {
		t.Errorf("proxy still forwards to %q after it stopped", now)
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
	var survivor *embedetcd.Member
	for _, m := range cl.Members {
		if m != victim {
			survivor = m
		}
	}
	want := collect(t, ctx, testutil.Client(t, survivor.ClientURL).Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision)), end)
	got := collect(t, ctx, wch, end)
	if len(want) < written {
		t.Fatalf("direct watch saw %d events for %d writes", len(want), written)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("watch through the proxy differs from a direct watch:\n proxy:  %d events %q\n direct: %d events %q", len(got), got, len(want), want)
	}
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
