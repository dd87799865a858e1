package shell_test

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// TestWatchAcrossEtcdRestart covers two bugs of etcd's own proxy. After etcd
// restarts, its proxy forwarded a second `created` for each re-established
// upstream watch, and clients bound later events to the wrong watch
// (etcd-io/etcd PR #21881); and a group whose upstream watch had died kept
// accepting new watchers that never got an event (#21813). Here, two
// watches on one raw stream must each get exactly one `created` and only
// their own key's events, with none lost or repeated; a watcher created
// after the restart must get events too.
func TestWatchAcrossEtcdRestart(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	ctx := testutil.Context(t, 60*time.Second)
	cc := testutil.Dial(t, p.Addr())
	l := openWatchLog(t, ctx, cc)
	l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 1})
	l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("b"), WatchId: 2})

	kv := testutil.Client(t, p.Addr())
	putOK := func(k, v string) {
		t.Helper()
		testutil.WaitUntil(t, 20*time.Second, "put "+k, func() bool {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			_, err := kv.Put(rctx, k, v)
			return err == nil
		})
	}
	putOK("a", "1")
	putOK("b", "1")
	l.waitFor(t, ctx, map[int64]int64{1: 2, 2: 3})

	m.Stop()
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	putOK("a", "2")
	putOK("b", "2")
	l.waitFor(t, ctx, map[int64]int64{1: 4, 2: 5})

	// A watcher on the same key, created after the restart, shares the
	// re-established group and gets the next event.
	l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 3})
	putOK("a", "3")
	l.waitFor(t, ctx, map[int64]int64{1: 6, 3: 6})

	want := map[int64]string{
		1: "rev=1 created|PUT:a=1@2|PUT:a=2@4|PUT:a=3@6",
		2: "rev=1 created|PUT:b=1@3|PUT:b=2@5",
		3: "rev=5 created|PUT:a=3@6",
	}
	for id, w := range want {
		if got := strings.Join(l.byID[id], "|"); got != w {
			t.Errorf("watch %d: %s, want %s", id, got, w)
		}
	}
	if len(l.violations) > 0 {
		t.Errorf("atomicity: %v", l.violations)
	}
}

// TestWatchAfterCompactionAndProxyRestart covers etcd-io/etcd#10650: after
// a compaction and a proxy restart, re-created client watches never
// received events again.
func TestWatchAfterCompactionAndProxyRestart(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	direct := testutil.Client(t, m.ClientURL)
	p1 := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	c1 := testutil.Client(t, p1.Addr())
	w1 := c1.Watch(ctx, "k")
	var rev int64
	for i := 0; i < 5; i++ {
		r, err := direct.Put(ctx, "k", "v")
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	for got := 0; got < 5; {
		select {
		case wr, ok := <-w1:
			if !ok || wr.Err() != nil {
				t.Fatalf("watch through the first proxy ended after %d events: %v", got, wr.Err())
			}
			got += len(wr.Events)
		case <-ctx.Done():
			t.Fatalf("watch through the first proxy: %d of 5 events before the deadline", got)
		}
	}
	if _, err := direct.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	p1.Close()

	p2 := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	c2 := testutil.Client(t, p2.Addr())
	// A client resuming after its last revision, and one starting fresh.
	resumed := c2.Watch(ctx, "k", clientv3.WithRev(rev+1), clientv3.WithCreatedNotify())
	fresh := c2.Watch(ctx, "k", clientv3.WithCreatedNotify())
	for _, wch := range []clientv3.WatchChan{resumed, fresh} {
		select {
		case wr, ok := <-wch:
			if !ok || !wr.Created {
				t.Fatalf("first response is not the created notification: %+v (channel open: %v)", wr, ok)
			}
		case <-ctx.Done():
			t.Fatal("no created notification before the deadline")
		}
	}
	r, err := direct.Put(ctx, "k", "after")
	if err != nil {
		t.Fatal(err)
	}
	for name, wch := range map[string]clientv3.WatchChan{"resumed": resumed, "fresh": fresh} {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				t.Fatalf("%s watch ended: %v", name, wr.Err())
			}
			if len(wr.Events) != 1 || wr.Events[0].Kv.ModRevision != r.Header.Revision {
				t.Errorf("%s watch got %+v, want the write at %d", name, wr.Events, r.Header.Revision)
			}
		case <-ctx.Done():
			t.Fatalf("%s watch never received the write after compaction and proxy restart", name)
		}
	}
}
