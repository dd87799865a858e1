package cache

import (
	"testing"

	"github.com/etcdproxy/etcdproxy/core/port"
)

func consistent(call port.CallID, k Key) Read { return Read{Call: call, Key: k, Consistent: true} }

// A consistent read waits for a revision fetch that started after it, and
// then for the subscription to deliver that revision; reads that arrive
// while a fetch is in flight share the next one (one fetch in flight).
// The answer carries the delivered revision.
func TestConsistentReadWaitsForRevisionAndDelivery(t *testing.T) {
	c := live(Config{MaxBytes: 1 << 20, ConsistentReads: true})
	c.Progress(5)
	k := fill(t, c, rangeReq("a", ""), 5, "a")

	c.Read(consistent(1, k))
	c.Read(consistent(2, k))
	rd := c.out.Ready()
	if len(rd.Fetches) != 1 || len(rd.Answers) != 0 {
		t.Fatalf("after two consistent reads: %+v, want one fetch and no answer", rd)
	}
	f1 := rd.Fetches[0].ID
	c.out.Advance()
	c.Read(consistent(3, k)) // arrives while f1 is in flight
	if rd := c.out.Ready(); len(rd.Fetches) != 0 {
		t.Fatalf("a second fetch while one is in flight: %v", rd.Fetches)
	}
	c.out.Advance()

	if _, ok := c.out.Fetched(f1, port.FetchResult{Header: &pbHeader{Revision: 7}}); !ok {
		t.Fatal("fetch unknown to the outbox")
	}
	if want := c.Fetched(f1, port.FetchResult{Header: &pbHeader{Revision: 7}}); !want {
		t.Fatalf("delivered 5 < 7 and no progress request wanted")
	}
	rd = c.out.Ready()
	if len(rd.Answers) != 0 || len(rd.Fetches) != 1 {
		t.Fatalf("after the fetch at 7 with 5 delivered: %+v, want no answer yet and the next fetch", rd)
	}
	f2 := rd.Fetches[0].ID
	c.out.Advance()

	c.Progress(6)
	if a := answers(c); len(a) != 0 {
		t.Fatalf("answered at 6 reads that need 7: %v", a)
	}
	c.Progress(7)
	a := answers(c)
	if len(a) != 2 || a[0].Resp == nil || a[1].Resp == nil || a[0].Resp.Header.Revision != 7 {
		t.Fatalf("after 7 delivered: %v, want calls 1 and 2 answered from the cache at 7", a)
	}

	// The event on a invalidates; call 3's fetch answers 8, which is
	// delivered with the event: it is forwarded, the entry being gone.
	c.Event([]byte("a"), 8)
	c.Progress(8)
	c.out.Fetched(f2, port.FetchResult{Header: &pbHeader{Revision: 8}})
	if want := c.Fetched(f2, port.FetchResult{Header: &pbHeader{Revision: 8}}); want {
		t.Fatalf("progress wanted though 8 is delivered")
	}
	if a := answers(c); len(a) != 1 || a[0].Call != 3 || a[0].Resp != nil {
		t.Fatalf("call 3: %v, want forwarded", a)
	}
	if st := c.Stats(); st.Fetches != 2 || st.ConsistentHits != 2 || st.Misses != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A consistent read is forwarded when the fetch fails, when its revision
// is not delivered within ConsistentWait, when the cache is not live, and
// when consistent reads are not enabled.
func TestConsistentReadForwarded(t *testing.T) {
	c := live(Config{MaxBytes: 1 << 20, ConsistentReads: true})
	k := fill(t, c, rangeReq("a", ""), 5, "a")
	c.Read(consistent(1, k))
	f := c.out.Ready().Fetches[0].ID
	c.out.Advance()
	c.Fetched(f, port.FetchResult{Err: errTest})
	if a := answers(c); len(a) != 1 || a[0].Resp != nil || c.Stats().Entries != 0 {
		t.Fatalf("after a refused fetch: %v (stats %+v), want forwarded and every entry dropped", a, c.Stats())
	}
	// Nothing is served or kept until etcd answers a fetch again; the
	// next read brings one once an interval has passed since the last.
	c.Read(Read{Call: 10, Key: k})
	fill(t, c, rangeReq("a", ""), 5, "a")
	if a := answers(c); len(a) != 1 || a[0].Resp != nil || c.Stats().Entries != 0 {
		t.Fatalf("after a refusal: %v (stats %+v), want forwarded and nothing kept", a, c.Stats())
	}
	c.Tick(t0.Add(DefaultConfirmInterval))
	f = c.out.Ready().Fetches[0].ID
	c.out.Advance()
	c.Fetched(f, port.FetchResult{Header: &pbHeader{Revision: 5}})
	k = fill(t, c, rangeReq("a", ""), 5, "a")

	c.Read(consistent(2, k))
	f = c.out.Ready().Fetches[0].ID
	c.out.Advance()
	c.Fetched(f, port.FetchResult{Header: &pbHeader{Revision: 9}})
	base := t0.Add(DefaultConfirmInterval) // when call 2 came
	c.Tick(base.Add(DefaultConsistentWait - 1))
	if a := answers(c); len(a) != 0 {
		t.Fatalf("answered before its wait ran out: %v", a)
	}
	c.Tick(base.Add(DefaultConsistentWait))
	if a := answers(c); len(a) != 1 || a[0].Resp != nil || c.Stats().ConsistentTimeouts != 1 {
		t.Fatalf("after the wait: %v (stats %+v), want forwarded", a, c.Stats())
	}
	if _, hit := lookup(t, c, k); !hit {
		t.Fatalf("a serializable read of a live entry was not answered")
	}

	c.SetLive(false)
	c.Read(consistent(3, k))
	if rd := c.out.Ready(); len(rd.Fetches) != 0 || len(rd.Answers) != 1 || rd.Answers[0].Resp != nil {
		t.Fatalf("not live: %+v, want forwarded at once", rd)
	}
	c.out.Advance()

	off := live(Config{MaxBytes: 1 << 20})
	k = fill(t, off, rangeReq("a", ""), 5, "a")
	off.Read(consistent(4, k))
	if rd := off.out.Ready(); len(rd.Fetches) != 0 || len(rd.Answers) != 1 || rd.Answers[0].Resp != nil {
		t.Fatalf("consistent reads disabled: %+v, want forwarded at once", rd)
	}
}

// A serializable read is answered from the cache only when the cache has
// delivered the caller's floor: no connection goes back in revisions.
func TestSerializableReadKeepsTheFloor(t *testing.T) {
	c := live(Config{MaxBytes: 1 << 20})
	c.Progress(5)
	k := fill(t, c, rangeReq("a", ""), 5, "a")
	c.Read(Read{Call: 1, Key: k, Floor: 6})
	if a := answers(c); len(a) != 1 || a[0].Resp != nil {
		t.Fatalf("floor 6 with 5 delivered: %v, want forwarded", a)
	}
	c.Progress(6)
	c.Read(Read{Call: 2, Key: k, Floor: 6})
	if a := answers(c); len(a) != 1 || a[0].Resp.GetHeader().GetRevision() != 6 || len(a[0].Resp.Kvs) != 1 {
		t.Fatalf("floor 6 with 6 delivered: %v, want the entry at 6", a)
	}
}

// Entries are served only while etcd answers a read without credentials:
// reads bring a confirming fetch every ConfirmInterval, and without an
// answer for twice that nothing is served.
func TestServedOnlyWhileConfirmed(t *testing.T) {
	c := live(Config{MaxBytes: 1 << 20})
	k := fill(t, c, rangeReq("a", ""), 5, "a")
	if _, hit := lookup(t, c, k); !hit {
		t.Fatal("no hit after a fill")
	}
	c.Tick(t0.Add(DefaultConfirmInterval))
	rd := c.out.Ready()
	if len(rd.Fetches) != 1 {
		t.Fatalf("no confirming fetch after a read and an interval: %+v", rd)
	}
	c.out.Advance()
	c.Tick(t0.Add(2 * DefaultConfirmInterval))
	if _, hit := lookup(t, c, k); !hit {
		t.Fatal("no hit within twice the interval")
	}
	c.Tick(t0.Add(2*DefaultConfirmInterval + 1))
	if _, hit := lookup(t, c, k); hit {
		t.Fatal("served though etcd has not answered a fetch for more than twice the interval")
	}
	c.Fetched(rd.Fetches[0].ID, port.FetchResult{Header: &pbHeader{Revision: 5}})
	if _, hit := lookup(t, c, k); !hit {
		t.Fatal("no hit after the fetch was answered")
	}
	// That read came an interval after the last fetch: it started the
	// next one itself.
	if st := c.Stats(); st.Fetches != 2 || c.fetch == 0 {
		t.Fatalf("stats %+v, want a second confirming fetch in flight", st)
	}
	c.Fetched(c.fetch, port.FetchResult{Header: &pbHeader{Revision: 5}})
	c.out.Advance()
	if c.Tick(t0.Add(20 * DefaultConfirmInterval)); c.out.HasReady() {
		t.Fatal("a confirming fetch though no read came since the last one")
	}
}
