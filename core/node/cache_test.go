package node_test

import (
	"bytes"
	"testing"

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
