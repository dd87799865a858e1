package sim

import (
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// The read cache's part of the world. Readers are client connections, each
// with an auth identity ("" for none) and the revision floor the shell
// keeps for it. A read is a CacheRead input; the node answers from the
// cache or says "forward", and then etcd serves the read at the store's
// revision of that moment and the answer reaches the client (and fills
// the cache) later, after whatever happens meanwhile. etcd answers each
// identity with a view of its own (values prefixed by the identity), as
// etcd's permissions make views differ, so an entry served to another
// identity than the one that filled it shows.
//
// Checked on every answer from the cache: (f) it is etcd's answer to the
// same request by the same identity at the revision it claims, which is
// not past the store's; (g) that revision is no older than any event the
// subscription was delivered on a key of the range (what the cache has
// been told, it does not hide); (h) a linearizable read's revision is at
// least the store's when the read was made; (i) no answer goes below the
// connection's floor when the read was made; (j) after an upstream watch
// stream broke, nothing is answered from the cache at a revision before
// the store's at the break: until its subscription has caught up with
// where etcd was then, the cache cannot know that it missed nothing; (k)
// nothing is answered from the cache while its subscription's group is
// rewound behind it (nothing new reaches the subscription then).

// Reader is a client connection making reads.
type Reader struct {
	Identity string
	Floor    int64
}

type readCall struct {
	reader     *Reader
	req        *pb.RangeRequest
	key        cache.Key
	floor      int64 // the reader's floor when it read
	storeRev   int64 // the store's revision when it read
	consistent bool
}

// MadeRead is a read made: who made it and what it asked.
type MadeRead struct {
	Reader *Reader
	Req    *pb.RangeRequest
}

// servedRead is etcd's answer to a forwarded read, on its way back.
type servedRead struct {
	call *readCall
	resp *pb.RangeResponse
}

type cacheWorld struct {
	Readers   []*Reader
	calls     map[port.CallID]*readCall
	nextCall  port.CallID
	forwarded []*readCall   // reads the cache sent on, not served by etcd yet
	answering []*servedRead // etcd's answers to them, not delivered yet
	// Made: the reads made, by reader, for reading again.
	Made []MadeRead
	// subDelivered: per key, the last revision of an event delivered on
	// the subscription's group (check g).
	subDelivered map[string]int64
	subFragments []*mvccpb.Event // of a response still in fragments
	// brokeAt: the store's revision when an upstream watch stream last
	// broke (check j).
	brokeAt int64
}

func newCacheWorld() cacheWorld {
	return cacheWorld{calls: map[port.CallID]*readCall{}, subDelivered: map[string]int64{}}
}

// AddReader opens a client connection that reads as identity.
func (w *World) AddReader(identity string) *Reader {
	r := &Reader{Identity: identity}
	w.Readers = append(w.Readers, r)
	return r
}

// ReadRange makes a read through the proxy.
func (w *World) ReadRange(r *Reader, req *pb.RangeRequest) {
	k, ok := cache.KeyOf(r.Identity, req)
	if !ok {
		return
	}
	if len(w.Made) < 16 {
		w.Made = append(w.Made, MadeRead{r, proto.Clone(req).(*pb.RangeRequest)})
	}
	if info, ok := w.N.InspectCacheSubscription(); ok && info.GroupRewound {
		w.Coverage.CacheReadRewinding++
	}
	w.nextCall++
	c := &readCall{reader: r, req: req, key: k, floor: r.Floor, storeRev: w.Store.Rev, consistent: !req.Serializable}
	w.calls[w.nextCall] = c
	w.step(node.CacheRead{Read: cache.Read{Call: w.nextCall, Key: k, Consistent: c.consistent, Floor: c.floor}})
}

// cacheAnswer takes the node's answer to a read (route).
func (w *World) cacheAnswer(a port.Answer) {
	c := w.calls[a.Call]
	if c == nil {
		w.violate("answer to call %d, which was never made or already answered", a.Call)
		return
	}
	delete(w.calls, a.Call)
	if a.Resp == nil {
		w.forwarded = append(w.forwarded, c)
		return
	}
	w.Coverage.CacheHits++
	if c.consistent {
		w.Coverage.CacheConsistentHits++
	}
	w.checkCached(c, a.Resp)
	c.reader.Floor = max(c.reader.Floor, a.Resp.Header.GetRevision())
}

func (w *World) checkCached(c *readCall, resp *pb.RangeResponse) {
	rev := resp.GetHeader().GetRevision()
	if rev > w.Store.Rev {
		w.violate("cached answer to %v at revision %d, past the store's %d", c.req, rev, w.Store.Rev)
		return
	}
	if want := w.rangeAt(c.reader.Identity, c.req, rev); !testutil.SameRange(resp, want) {
		w.violate("cached answer to %v for %q at revision %d: %s; etcd's at that revision: %s", c.req, c.reader.Identity, rev, testutil.RangeString(resp), testutil.RangeString(want))
	}
	for k, at := range w.subDelivered {
		if at > rev && InRange([]byte(k), c.req.Key, c.req.RangeEnd) {
			w.violate("cached answer to %v at revision %d, though the subscription was delivered an event on %q at %d", c.req, rev, k, at)
		}
	}
	if c.consistent && rev < c.storeRev {
		w.violate("linearizable read of %v answered from the cache at revision %d; the store was at %d when it was made", c.req, rev, c.storeRev)
	}
	if info, ok := w.N.InspectCacheSubscription(); ok && info.GroupRewound {
		w.violate("read of %v answered from the cache while its subscription's group is rewound behind it", c.req)
	}
	if rev < w.brokeAt {
		w.violate("read of %v answered from the cache at revision %d, before the %d of the store when an upstream watch stream last broke", c.req, rev, w.brokeAt)
	}
	if rev < c.floor {
		w.violate("read of %v answered from the cache at revision %d, below the %d its connection had seen", c.req, rev, c.floor)
	}
}

// ServeRead has etcd serve the i-th forwarded read now (a member that
// cannot serve fails it, and the client gets the error: nothing fills).
func (w *World) ServeRead(i int) {
	c, ok := takeAt(&w.forwarded, i)
	if !ok || !w.inUseServes() {
		return
	}
	w.answering = append(w.answering, &servedRead{call: c, resp: w.rangeAt(c.reader.Identity, c.req, w.Store.Rev)})
}

// DeliverRead hands the client etcd's answer to the i-th served read, and
// the cache its fill.
func (w *World) DeliverRead(i int) {
	s, ok := takeAt(&w.answering, i)
	if !ok {
		return
	}
	c := s.call
	c.reader.Floor = max(c.reader.Floor, s.resp.Header.Revision)
	w.step(node.CacheFill{Key: c.key, Start: c.req.Key, End: c.req.RangeEnd, Resp: s.resp})
}

// noteSubscription records the events of an upstream response that the
// cache's subscription takes (its group's), before the node steps it.
func (w *World) noteSubscription(r *pb.WatchResponse) {
	info, ok := w.N.InspectCacheSubscription()
	if !ok || !info.InGroup || info.GroupUpstream != r.WatchId || info.GroupRewound {
		// (A rewound group holds what it receives until its upstream
		// watch has caught up: the subscription gets it later.)
		return
	}
	if r.Fragment {
		// The events of a revision reach the subscription with the last
		// fragment.
		w.subFragments = append(w.subFragments, r.Events...)
		return
	}
	for _, ev := range append(w.subFragments, r.Events...) {
		k := string(ev.Kv.Key)
		w.subDelivered[k] = max(w.subDelivered[k], ev.Kv.ModRevision)
	}
	w.subFragments = nil
}

// rangeAt is etcd's answer to req by identity at revision rev: the keys of
// the range as they were then, with the request's limit, keys-only and
// count-only; values carry the identity.
func (w *World) rangeAt(identity string, req *pb.RangeRequest, rev int64) *pb.RangeResponse {
	state := map[string]*mvccpb.KeyValue{}
	for _, ev := range w.Store.Events(req.Key, req.RangeEnd, 0, rev) {
		if ev.Type == mvccpb.DELETE {
			delete(state, string(ev.Kv.Key))
		} else {
			state[string(ev.Kv.Key)] = ev.Kv
		}
	}
	keys := make([]string, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: rev}, Count: int64(len(keys))}
	if req.CountOnly {
		return resp
	}
	if req.Limit > 0 && int64(len(keys)) > req.Limit {
		keys, resp.More = keys[:req.Limit], true
	}
	for _, k := range keys {
		src := state[k]
		kv := &mvccpb.KeyValue{Key: src.Key, CreateRevision: src.CreateRevision, ModRevision: src.ModRevision, Version: src.Version}
		if !req.KeysOnly {
			kv.Value = []byte(identity + "|" + string(src.Value))
		}
		resp.Kvs = append(resp.Kvs, kv)
	}
	return resp
}

// settleReads serves and delivers every forwarded read.
func (w *World) settleReads() {
	for len(w.forwarded) > 0 || len(w.answering) > 0 {
		if len(w.forwarded) > 0 {
			w.ServeRead(0)
			continue
		}
		w.DeliverRead(0)
	}
}

// closeReads, once every client has gone: with no read for the cache's
// idle time, it holds no entry and its subscription is closed.
func (w *World) closeReads() {
	if w.Cfg.Cache.MaxBytes <= 0 {
		return
	}
	for end := w.Clock.Now().Add(w.Cfg.Cache.IdleAfter); w.Clock.Now().Before(end); {
		w.Tick(500 * time.Millisecond)
		w.settleReads()
	}
	w.Settle()
	if len(w.calls) > 0 {
		w.violate("%d reads never answered", len(w.calls))
	}
	if st := w.N.Stats().Cache; st.Entries != 0 || st.Bytes != 0 {
		w.violate("the read cache holds %d entries (%d bytes) after being idle for %v", st.Entries, st.Bytes, w.Cfg.Cache.IdleAfter)
	}
	if _, ok := w.N.InspectCacheSubscription(); ok {
		w.violate("the read cache's subscription is open after being idle for %v", w.Cfg.Cache.IdleAfter)
	}
	w.Coverage.CacheInvalidations += int(w.N.Stats().Cache.Invalidations)
}
