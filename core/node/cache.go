package node

import (
	"math"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/watch"
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

// startCache makes the cache, when it is enabled.
func (n *Node) startCache() {
	if n.cfg.Cache.MaxBytes <= 0 {
		return
	}
	n.cache = cache.New(n.cfg.Cache, n.out, n.now)
}

// subscribeFirst opens the subscription at the first cacheable read: a
// proxy whose clients only watch or keep leases alive costs etcd no
// watch on the whole keyspace.
func (n *Node) subscribeFirst() {
	if n.cacheSubscribed || n.now.Before(n.cacheRetryAt) {
		return
	}
	n.cacheSubscribed = true
	n.worthStart()
	n.watch.OpenStream(cacheStream, "", n.out.Subscribe(cacheStream, n.cacheSend))
	n.subscribe()
}

func (n *Node) subscribe() {
	req := &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}}
	n.cfg.Watch.Prefix.WatchCreateRequest(req)
	n.watch.Create(cacheStream, req)
	awaiting := n.cacheAnswered < n.cacheWanted
	n.cacheAsked, n.cacheAnswered, n.cacheWanted = 0, 0, 0 // a new stream
	if awaiting {
		n.askProgress() // the one asked after the break went with the old stream
	}
}

// cacheSend takes what the watch machine sends the subscription.
func (n *Node) cacheSend(s port.Send) {
	r := s.Response()
	switch {
	case r == nil:
	case r.Canceled:
		// Its revisions were compacted, or etcd refused it (auth on, and
		// the proxy holds no credentials): subscribe again at a read
		// after resubscribeAfter, not at once, so that a refusal does not
		// become a loop of refused requests.
		n.cache.Reset()
		n.cacheResubscribe = true // in this step's end: the machine is mid-step
	case len(r.Events) > 0:
		last := int64(0)
		n.worth.events += int64(len(r.Events))
		for _, ev := range r.Events {
			if ev.Kv != nil {
				n.cache.Event(ev.Kv.Key, ev.Kv.ModRevision)
				last = max(last, ev.Kv.ModRevision)
			}
		}
		n.cache.Progress(last)
	case r.WatchId == -1 && !r.Created:
		// A progress answer; they come in the order asked. The one asked
		// after the last break says the subscription missed nothing up to
		// a revision etcd had after it.
		n.cacheAnswered++
		n.cache.Progress(r.GetHeader().GetRevision())
		if n.cacheAnswered >= n.cacheWanted {
			n.cache.SetLive(true)
		}
	default: // created, or a progress notification
		n.cache.Progress(r.GetHeader().GetRevision())
		if n.cacheAnswered >= n.cacheWanted {
			n.cache.SetLive(true)
		}
	}
}

// cacheStreamLost: an upstream watch stream broke; the subscription is not
// live until a progress answer says it has caught up.
func (n *Node) cacheStreamLost() {
	if n.cache == nil {
		return
	}
	n.cache.SetLive(false)
	n.askProgress()
}

// askProgress asks for progress on the subscription and waits for that
// answer (not an earlier one) before serving again.
func (n *Node) askProgress() {
	n.cacheAsked++
	n.cacheWanted = n.cacheAsked
	n.cacheAskedAt = n.now
	n.watch.RequestProgress(cacheStream)
}

// reaskAfter: a progress request on the subscription not answered this
// long (its revision read failed, say) is asked again.
const reaskAfter = 2 * time.Second

// resubscribeAfter is how long a cancelled subscription waits before a
// read opens it again.
const resubscribeAfter = time.Second

// cacheTick tells the cache the time and closes an idle subscription: a
// proxy whose clients stopped reading holds no watch on the keyspace.
func (n *Node) cacheTick() {
	if n.cache == nil {
		return
	}
	n.cache.Tick(n.now)
	if n.cacheSubscribed && n.cacheAnswered < n.cacheWanted && n.now.Sub(n.cacheAskedAt) >= reaskAfter {
		n.askProgress()
	}
	if n.cacheSubscribed && n.cache.Idle() {
		n.cache.Reset()
		n.closeSubscription()
	}
	n.worthCheck()
}

// closeSubscription closes the subscription's stream: its output first,
// so that nothing the watch machine sends as it closes reaches the cache
// (which must stay not live without a subscription).
func (n *Node) closeSubscription() {
	n.out.CloseStream(cacheStream)
	n.watch.CloseStream(cacheStream)
	n.cacheSubscribed = false
	n.cache.SetLive(false)
}

// cacheAfterStep closes a cancelled subscription's stream (a later read
// opens a new one), and pauses the cache while the subscription's group is
// rewound behind it.
func (n *Node) cacheAfterStep() {
	if n.cacheSubscribed {
		info, ok := n.watch.Inspect(cacheStream, 0)
		n.cache.SetPaused(ok && info.GroupRewound)
	}
	if n.cache != nil && n.cacheResubscribe {
		n.cacheResubscribe = false
		n.closeSubscription()
		n.cacheRetryAt = n.now.Add(resubscribeAfter)
	}
}

// cacheRead answers a client's cacheable read (always: forward, when the
// cache is disabled).
func (n *Node) cacheRead(r cache.Read) {
	if n.cache == nil {
		n.out.Answer(port.Answer{Call: r.Call})
		return
	}
	n.subscribeFirst()
	n.cache.Read(r)
}

// cacheFetched hands the cache its revision fetch's answer.
func (n *Node) cacheFetched(id port.FetchID, r port.FetchResult) {
	if n.cache != nil && n.cache.Fetched(id, r) && n.cacheSubscribed {
		n.cacheAsked++ // (answered in order with the others)
		n.watch.RequestProgress(cacheStream)
	}
}

// InspectCacheSubscription tells where the cache's subscription stands
// (its watcher is the first of its stream), for the simulation; it
// changes nothing.
func (n *Node) InspectCacheSubscription() (watch.WatcherInfo, bool) {
	if !n.cacheSubscribed {
		return watch.WatcherInfo{}, false
	}
	return n.watch.Inspect(cacheStream, 0)
}
