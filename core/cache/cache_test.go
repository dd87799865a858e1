package cache

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

func rangeReq(key, end string) *pb.RangeRequest {
	return &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end), Serializable: true}
}

func resp(rev int64, kvs ...string) *pb.RangeResponse {
	r := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: rev}, Count: int64(len(kvs))}
	for _, k := range kvs {
		r.Kvs = append(r.Kvs, &mvccpb.KeyValue{Key: []byte(k), Value: []byte("v"), ModRevision: rev})
	}
	return r
}

func key(t *testing.T, ident string, r *pb.RangeRequest) Key {
	t.Helper()
	k, ok := KeyOf(ident, r)
	if !ok {
		t.Fatalf("%v not cacheable", r)
	}
	return k
}

var t0 = time.Unix(1e9, 0)

func live(cfg Config) *Cache {
	c := New(cfg, port.NewOutbox(port.Config{}, t0), t0)
	c.SetLive(true)
	c.confirmed, c.fetchedAt = t0, t0 // as if etcd had just answered a fetch
	return c
}

// answers returns the answers handed out since the last call.
func answers(c *Cache) []port.Answer {
	a := slices.Clone(c.out.Ready().Answers)
	c.out.Advance()
	return a
}

// lookup makes a serializable read of k and returns the cache's answer.
func lookup(t *testing.T, c *Cache, k Key) (*pb.RangeResponse, bool) {
	t.Helper()
	c.Read(Read{Call: 1, Key: k})
	a := answers(c)
	if len(a) != 1 || a[0].Call != 1 {
		t.Fatalf("answers %v, want one for call 1", a)
	}
	return a[0].Resp, a[0].Resp != nil
}

func fill(t *testing.T, c *Cache, r *pb.RangeRequest, rev int64, kvs ...string) Key {
	t.Helper()
	k := key(t, "", r)
	c.Fill(k, r.Key, r.RangeEnd, resp(rev, kvs...))
	return k
}

func TestOnlyCurrentReadsAreCacheable(t *testing.T) {
	for _, r := range []*pb.RangeRequest{
		{Key: []byte("a"), Revision: 3},
		{Key: []byte("a"), Serializable: true, Revision: 3},
	} {
		if _, ok := KeyOf("", r); ok {
			t.Errorf("%v is cacheable", r)
		}
	}
	lin := &pb.RangeRequest{Key: []byte("a")}
	l, _ := KeyOf("", lin)
	if s, _ := KeyOf("", rangeReq("a", "")); l != s || lin.Serializable {
		t.Errorf("a linearizable read does not share the serializable read's key, or KeyOf changed it: %v", lin)
	}
	a, _ := KeyOf("", &pb.RangeRequest{Key: []byte("a"), Serializable: true})
	b, _ := KeyOf("", &pb.RangeRequest{Key: []byte("a"), Serializable: true, KeysOnly: true})
	c, _ := KeyOf("alice", &pb.RangeRequest{Key: []byte("a"), Serializable: true})
	if a == b || a == c {
		t.Errorf("keys collide: %q %q %q", a, b, c)
	}
}

// An event drops every entry whose range holds its key: single keys,
// spans, open-ended ranges and the whole keyspace; others stay.
func TestEventsDropEveryRangeHoldingTheKey(t *testing.T) {
	c := live(Config{MaxBytes: 1 << 20})
	reqs := map[string]*pb.RangeRequest{
		"b":      rangeReq("b", ""),
		"c":      rangeReq("c", ""),
		"[a,c)":  rangeReq("a", "c"),
		"[c,d)":  rangeReq("c", "d"),
		"[b,∞)":  rangeReq("b", "\x00"),
		"[d,∞)":  rangeReq("d", "\x00"),
		"all":    rangeReq("\x00", "\x00"),
		"prefix": rangeReq("b/", "b0"),
	}
	keys := map[string]Key{}
	for name, r := range reqs {
		keys[name] = fill(t, c, r, 5)
	}
	c.Event([]byte("b"), 6)
	for name, k := range keys {
		_, hit := lookup(t, c, k)
		want := map[string]bool{"c": true, "[c,d)": true, "[d,∞)": true, "prefix": true}[name]
		if hit != want {
			t.Errorf("%s: hit %v after an event on b, want %v", name, hit, want)
		}
	}
	c.Event([]byte("b/x"), 7)
	if _, hit := lookup(t, c, keys["prefix"]); hit {
		t.Errorf("prefix entry served after an event inside it")
	}
	if st := c.Stats(); st.Invalidations != 5 || st.Entries != 3 || c.Delivered() != 7 {
		t.Errorf("stats %+v delivered %d", st, c.Delivered())
	}
}

// A response older than what the subscription delivered may miss an event
// already delivered: it is not kept. Nothing is kept or served while the
// subscription is not live; Reset drops everything.
func TestFillGuards(t *testing.T) {
	c := live(Config{MaxBytes: 1 << 20})
	c.Event([]byte("x"), 9)
	k := fill(t, c, rangeReq("a", ""), 8, "a")
	if _, hit := lookup(t, c, k); hit {
		t.Fatalf("kept a response at 8 after the subscription delivered 9")
	}
	fill(t, c, rangeReq("a", ""), 9, "a")
	if _, hit := lookup(t, c, k); !hit {
		t.Fatalf("a response at 9 not kept")
	}
	c.SetLive(false)
	if _, hit := lookup(t, c, k); hit {
		t.Fatalf("served while not live")
	}
	k2 := fill(t, c, rangeReq("b", ""), 10, "b")
	c.SetLive(true)
	if _, hit := lookup(t, c, k2); hit {
		t.Fatalf("kept a response filled while not live")
	}
	if _, hit := lookup(t, c, k); !hit {
		t.Fatalf("entry lost across a pause")
	}
	c.Reset()
	c.SetLive(true)
	if _, hit := lookup(t, c, k); hit || c.Stats().Entries != 0 || c.Stats().Bytes != 0 {
		t.Fatalf("entries after Reset: %+v", c.Stats())
	}
}

// Identities never share entries.
func TestIdentitiesDoNotShare(t *testing.T) {
	c := live(Config{MaxBytes: 1 << 20})
	r := rangeReq("a", "")
	ka, kb := key(t, "alice", r), key(t, "bob", r)
	c.Fill(ka, r.Key, r.RangeEnd, resp(3, "a"))
	if _, hit := lookup(t, c, kb); hit {
		t.Fatalf("bob served alice's entry")
	}
	if _, hit := lookup(t, c, ka); !hit {
		t.Fatalf("alice's entry not kept")
	}
}

// Bytes stay under MaxBytes, least recently used first out; a response
// over MaxEntryBytes is not kept.
func TestBoundedLRU(t *testing.T) {
	k0 := key(t, "", rangeReq("k00", ""))
	per := footprint(k0, []byte("k00"), nil, resp(1, "k00"))
	c := live(Config{MaxBytes: 3 * per, MaxEntryBytes: per})
	var ks []Key
	for i := range 3 {
		ks = append(ks, fill(t, c, rangeReq(fmt.Sprintf("k%02d", i), ""), 1, fmt.Sprintf("k%02d", i)))
	}
	lookup(t, c, ks[0]) // k00 used: k01 is now the least recent
	fill(t, c, rangeReq("k03", ""), 1, "k03")
	if _, hit := lookup(t, c, ks[1]); hit {
		t.Errorf("least recently used entry not evicted")
	}
	if _, hit := lookup(t, c, ks[0]); !hit {
		t.Errorf("recently used entry evicted")
	}
	if st := c.Stats(); st.Bytes > 3*per || st.Entries != 3 || st.Evictions != 1 {
		t.Errorf("stats %+v (entry %d bytes)", st, per)
	}
	big := fill(t, c, rangeReq("big", ""), 1, "big", "big2")
	if _, hit := lookup(t, c, big); hit {
		t.Errorf("a response over MaxEntryBytes was kept")
	}
}

func TestHolds(t *testing.T) {
	for _, tc := range []struct {
		start, end, key string
		want            bool
	}{
		{"a", "", "a", true},
		{"a", "", "ab", false},
		{"a", "c", "b", true},
		{"a", "c", "c", false},
		{"a", "c", "a", true},
		{"b", "\x00", "zzz", true},
		{"b", "\x00", "a", false},
		{"\x00", "\x00", "\x00", true},
		{"\x00", "\x00", "anything", true},
		{"a", "\x00\x01", "a", false}, // end below start: etcd's empty range
	} {
		if got := holds([]byte(tc.start), []byte(tc.end), []byte(tc.key)); got != tc.want {
			t.Errorf("holds(%q, %q, %q) = %v, want %v", tc.start, tc.end, tc.key, got, tc.want)
		}
	}
}

type pbHeader = pb.ResponseHeader

var errTest = errors.New("test")
