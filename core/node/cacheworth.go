package node

import "time"

// The cache's subscription pays for itself or goes. While it is open,
// every write anywhere in the keyspace costs etcd an event sent to the
// proxy and the proxy that event read: under a write-heavy load whose
// reads rarely hit the cache, that costs etcd more than the cache saves
// it. So every
// worthWindow the node compares what the subscription brought with what
// the cache answered: at least worthMinEvents events and more than
// worthRatio per hit close the subscription, and the cache forwards every
// read for a pause (1 s, doubled at each such close in a row, up to
// worthPauseMax) before a read opens it again, empty. A window in which
// the cache earned its events ends the doubling.
const (
	worthWindow    = time.Second
	worthMinEvents = 1000
	worthRatio     = 4
	worthPauseMin  = time.Second
	worthPauseMax  = time.Minute
)

// cacheWorth is the current window of the subscription's account.
type cacheWorth struct {
	since  time.Time
	events int64 // brought by the subscription since since
	hits   int64 // the cache's hit count at since
	pause  time.Duration
	closes int64 // subscriptions closed for costing more than they saved
}

// worthStart opens a window, at a new subscription or after a check.
func (n *Node) worthStart() {
	n.worth.since, n.worth.events, n.worth.hits = n.now, 0, n.cache.Stats().Hits
}

// worthCheck closes the subscription at the end of a window in which it
// cost more than it saved.
func (n *Node) worthCheck() {
	if !n.cacheSubscribed || n.now.Sub(n.worth.since) < worthWindow {
		return
	}
	w := &n.worth
	events, hits := w.events, n.cache.Stats().Hits-w.hits
	n.worthStart()
	if events < worthMinEvents {
		return
	}
	if events <= worthRatio*hits {
		w.pause = 0
		return
	}
	w.pause = min(max(worthPauseMin, 2*w.pause), worthPauseMax)
	w.closes++
	n.cache.Reset()
	n.closeSubscription()
	n.cacheRetryAt = n.now.Add(w.pause)
}
