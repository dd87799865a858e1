package node_test

import (
	"bytes"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

func cacheKey(t *testing.T, key string) cache.Key {
	k, ok := cache.KeyOf("", &pb.RangeRequest{Key: []byte(key), Serializable: true})
	if !ok {
		t.Fatal("not cacheable")
	}
	return k
}

var nextCall port.CallID

// lookup makes a serializable read of k and returns whether the cache
// answered it (the answer is left in Ready, with whatever else is there).
func lookup(t *testing.T, n *node.Node, k cache.Key) bool {
	t.Helper()
	nextCall++
	n.Step(node.CacheRead{Read: cache.Read{Call: nextCall, Key: k}})
	for _, a := range n.Ready().Answers {
		if a.Call == nextCall {
			return a.Resp != nil
		}
	}
	t.Fatalf("call %d not answered", nextCall)
	return false
}

func fillCache(n *node.Node, k cache.Key, resp *pb.RangeResponse) {
	n.Step(node.CacheFill{Key: k, Start: []byte("a"), Resp: resp})
}

func rangeResp(rev int64) *pb.RangeResponse {
	return &pb.RangeResponse{Header: hdr(rev), Count: 1, Kvs: []*mvccpb.KeyValue{{Key: []byte("a"), Value: []byte("v")}}}
}

// The cache's subscription is one upstream watch over the whole keyspace,
// through the watch machine: it goes live with its created answer, an
// event written anywhere (here: not through the proxy at all) drops the
// entries holding its key, and a lost upstream stream stops the cache
// serving until a progress answer says the subscription caught up.
func TestCacheFedBySubscription(t *testing.T) {
	n := node.New(node.Config{Cache: cache.Config{MaxBytes: 1 << 20}}, t0)
	if n.HasReady() {
		t.Fatalf("a new node subscribed before any read: %+v", n.Ready())
	}
	a := cacheKey(t, "a")
	if lookup(t, n, a) {
		t.Fatalf("the first read was answered from the cache")
	}
	rd := n.Ready()
	if len(rd.Fetches) != 1 || len(rd.Sends) != 0 {
		t.Fatalf("after the first read: %+v, want one revision fetch and no send", rd)
	}
	n.Advance()
	n.Step(node.Fetched{ID: rd.Fetches[0].ID, Result: port.FetchResult{Header: hdr(5)}})
	rd = n.Ready()
	if len(rd.Upstream) != 1 || len(rd.Sends) != 0 {
		t.Fatalf("after the fetch: %+v, want one upstream create and nothing for any client", rd)
	}
	c := rd.Upstream[0].Watch.GetCreateRequest()
	if c == nil || !bytes.Equal(c.Key, []byte{0}) || !bytes.Equal(c.RangeEnd, []byte{0}) || c.StartRevision > 6 {
		t.Fatalf("upstream request %v, want a watch on every key from 6 at the latest", rd.Upstream[0])
	}
	id := c.WatchId
	n.Advance()

	fillCache(n, a, rangeResp(5))
	if hit := lookup(t, n, a); !hit {
		t.Fatalf("no hit after a fill at 5 (stats %+v)", n.Stats().Cache)
	}
	n.Step(node.UpstreamResponse{Upstream: port.WatchShared, Watch: &pb.WatchResponse{Header: hdr(5), Created: true, WatchId: id}})
	n.Step(node.UpstreamResponse{Upstream: port.WatchShared, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: id,
		Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), ModRevision: 6}}}}})
	if hit := lookup(t, n, a); hit {
		t.Fatalf("hit after an event on the key")
	}
	fillCache(n, a, rangeResp(5))
	if hit := lookup(t, n, a); hit {
		t.Fatalf("kept a response at 5 after the event at 6")
	}
	fillCache(n, a, rangeResp(6))
	if hit := lookup(t, n, a); !hit {
		t.Fatalf("no hit after a fill at 6")
	}
	if rd := n.Ready(); len(rd.Sends)+len(rd.Upstream)+len(rd.Fetches) != 0 {
		t.Fatalf("the subscription's responses reached the shell: %+v", rd)
	}
	n.Advance()

	n.Step(node.UpstreamLost{Upstream: port.WatchShared})
	if hit := lookup(t, n, a); hit {
		t.Fatalf("served while the upstream stream is lost")
	}
	// The machine watches again from 7 and asks etcd for progress; once
	// etcd answers that nothing happened since, the cache serves again.
	for range 10 {
		rd := take(n)
		for _, u := range rd.Upstream {
			w := u.Watch
			switch {
			case w.GetCreateRequest() != nil:
				n.Step(node.UpstreamResponse{Upstream: u.Upstream, Watch: &pb.WatchResponse{Header: hdr(6), Created: true, WatchId: w.GetCreateRequest().WatchId}})
			case w.GetProgressRequest() != nil:
				n.Step(node.UpstreamResponse{Upstream: u.Upstream, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: -1}})
			}
		}
		for _, f := range rd.Fetches {
			n.Step(node.Fetched{ID: f.ID, Result: port.FetchResult{Header: hdr(6)}})
		}
		if hit := lookup(t, n, a); hit {
			break
		}
	}
	if hit := lookup(t, n, a); !hit {
		t.Fatalf("not serving again after the subscription caught up (stats %+v)", n.Stats().Cache)
	}
	if st := n.Stats().Cache; st.Invalidations != 1 || st.Entries != 1 {
		t.Fatalf("cache stats %+v", st)
	}
}

// The subscription pays for itself or goes: a window of a second in which
// it brought at least 1,000 events and more than 4 per hit closes it, and
// reads are forwarded, without a new subscription, for a pause of a
// second (doubled at each such close in a row); a read after the pause
// subscribes again. A window in which the cache earned its events keeps
// the subscription open.
func TestCacheSubscriptionPausesWhenItCostsMore(t *testing.T) {
	n := node.New(node.Config{Cache: cache.Config{MaxBytes: 1 << 20}}, t0)
	a := cacheKey(t, "a")
	now := t0
	// subscribe makes a read that opens the subscription, answers its
	// fetch at rev and its create, and returns its upstream watch ID.
	subscribe := func(rev int64) int64 {
		t.Helper()
		if lookup(t, n, a) {
			t.Fatalf("a read before the subscription was answered from the cache")
		}
		rd := take(n)
		if len(rd.Fetches) != 1 {
			t.Fatalf("no revision fetch for a new subscription: %+v", rd)
		}
		n.Step(node.Fetched{ID: rd.Fetches[0].ID, Result: port.FetchResult{Header: hdr(rev)}})
		rd = take(n)
		if len(rd.Upstream) != 1 || rd.Upstream[0].Watch.GetCreateRequest() == nil {
			t.Fatalf("no upstream create for a new subscription: %+v", rd)
		}
		id := rd.Upstream[0].Watch.GetCreateRequest().WatchId
		n.Step(node.UpstreamResponse{Upstream: port.WatchShared, Watch: &pb.WatchResponse{Header: hdr(rev), Created: true, WatchId: id}})
		take(n)
		return id
	}
	// writes delivers k events on key b, one revision each, from rev on.
	writes := func(id, rev int64, k int) int64 {
		evs := make([]*mvccpb.Event, k)
		for i := range evs {
			evs[i] = &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("b"), ModRevision: rev + int64(i)}}
		}
		n.Step(node.UpstreamResponse{Upstream: port.WatchShared, Watch: &pb.WatchResponse{Header: hdr(rev + int64(k) - 1), WatchId: id, Events: evs}})
		take(n)
		return rev + int64(k)
	}
	tick := func(d time.Duration) port.Ready {
		now = now.Add(d)
		n.Step(node.Tick{Now: now})
		return take(n)
	}
	hits := func(k int) {
		t.Helper()
		for range k {
			if !lookup(t, n, a) {
				t.Fatalf("no hit (stats %+v)", n.Stats().Cache)
			}
		}
		take(n)
	}

	id := subscribe(5)
	fillCache(n, a, rangeResp(5))
	hits(250)
	rev := writes(id, 6, 1000) // 4 events per hit: worth it
	if rd := tick(time.Second); len(rd.Upstream) != 0 || n.Stats().CachePauses != 0 {
		t.Fatalf("a subscription that earned its events was closed: %+v, pauses %d", rd.Upstream, n.Stats().CachePauses)
	}
	fillCache(n, a, rangeResp(rev-1))
	hits(249)
	rev = writes(id, rev, 1000)
	rd := tick(time.Second)
	if len(rd.Upstream) != 1 || rd.Upstream[0].Watch.GetCancelRequest().GetWatchId() != id || n.Stats().CachePauses != 1 {
		t.Fatalf("after 1,000 events for 249 hits: upstream %v, pauses %d; want the subscription cancelled", rd.Upstream, n.Stats().CachePauses)
	}
	// Paused: reads are forwarded and open nothing.
	if lookup(t, n, a) {
		t.Fatalf("served from the cache after the subscription closed")
	}
	if rd := take(n); len(rd.Fetches)+len(rd.Upstream) != 0 {
		t.Fatalf("a read during the pause subscribed again: %+v", rd)
	}
	tick(time.Second)
	id = subscribe(rev)
	fillCache(n, a, rangeResp(rev))
	rev = writes(id, rev+1, 5000) // no hit at all: closed again, for 2 s
	if rd := tick(time.Second); len(rd.Upstream) != 1 || n.Stats().CachePauses != 2 {
		t.Fatalf("second window: upstream %v, pauses %d", rd.Upstream, n.Stats().CachePauses)
	}
	tick(time.Second)
	if lookup(t, n, a) {
		t.Fatalf("served from the cache during the pause")
	}
	if rd := take(n); len(rd.Fetches)+len(rd.Upstream) != 0 {
		t.Fatalf("a read a second into a pause of two subscribed again: %+v", rd)
	}
	tick(time.Second)
	subscribe(rev)
}
