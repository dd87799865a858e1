package node

import (
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// The read cache (core/cache) is fed by a subscription: an internal watch
// stream that the watch machine serves like a client's, over the whole
// keyspace the proxy serves (the namespace, under --namespace), so that
// every event etcd makes reaches the cache through the same upstream
// watch groups as client watchers' and one upstream watch, whatever the
// number of ranges cached. Event keys come stripped of the namespace, as
// the cache's keys are.
//
// Liveness: the subscription is live from its created answer on. When an
// upstream watch stream is lost it is not, until the watch machine answers
// a progress request on it: that answer comes only once the subscription
// has every event up to the revision it carries. A cancelled subscription
// (its revisions compacted) lost events: the cache drops everything and
// subscribes again.

// cacheStream is the subscription's stream: the shell numbers its streams
// from 1 up and never reaches it.
const cacheStream port.StreamID = math.MaxUint64

// startCache opens the subscription, when the cache is enabled.
func (n *Node) startCache() {
	if n.cfg.Cache.MaxBytes <= 0 {
		return
	}
	n.cache = cache.New(n.cfg.Cache)
	n.watch.OpenStream(cacheStream, "", n.out.Subscribe(cacheStream, n.cacheSend))
	n.subscribe()
}

func (n *Node) subscribe() {
	req := &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	n.cfg.Watch.Prefix.WatchCreateRequest(req)
	n.watch.Create(cacheStream, req)
}

// cacheSend takes what the watch machine sends the subscription.
func (n *Node) cacheSend(s port.Send) {
	r := s.Watch
	switch {
	case r == nil:
	case r.Canceled:
		n.cache.Reset()
		n.cacheResubscribe = true // in this step's end: the machine is mid-step
	case r.Created:
		n.cache.Progress(r.GetHeader().GetRevision())
		n.cache.SetLive(true)
	case len(r.Events) > 0:
		for _, ev := range r.Events {
			if ev.Kv != nil {
				n.cache.Event(ev.Kv.Key, ev.Kv.ModRevision)
			}
		}
	default: // a progress answer or notification
		n.cache.Progress(r.GetHeader().GetRevision())
		n.cache.SetLive(true)
	}
}

// cacheStreamLost: an upstream watch stream broke; the subscription is not
// live until a progress answer says it has caught up.
func (n *Node) cacheStreamLost() {
	if n.cache == nil {
		return
	}
	n.cache.SetLive(false)
	n.watch.RequestProgress(cacheStream)
}

// afterStep re-subscribes a cancelled subscription.
func (n *Node) cacheAfterStep() {
	if n.cache != nil && n.cacheResubscribe {
		n.cacheResubscribe = false
		n.subscribe()
	}
}

// CacheLookup answers a cacheable read from the cache, if it can. The
// response is shared: the caller must not change it.
func (n *Node) CacheLookup(k cache.Key) (*pb.RangeResponse, bool) {
	if n.cache == nil {
		return nil, false
	}
	return n.cache.Lookup(k)
}

// CacheFill keeps etcd's response to a cacheable read.
func (n *Node) CacheFill(k cache.Key, key, end []byte, resp *pb.RangeResponse) {
	if n.cache != nil {
		n.cache.Fill(k, key, end, resp)
	}
}
