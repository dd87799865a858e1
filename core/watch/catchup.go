package watch

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// catchUp is an upstream watch serving a single client watcher, on the
// catch-up stream: a watcher whose place lies behind its group's window
// (a slow stream, a fetch answered late) or whose start revision etcd has
// compacted. It merges into the group once the window reaches back to it.
type catchUp struct {
	up  upWatch
	w   *watcher
	rev int64 // every event up to rev has reached the watcher
}

// openCatchUp gives w a catch-up watch from w.next.
func (m *Machine) openCatchUp(w *watcher) { m.openCatchUpAbove(w, 0) }

// openCatchUpAbove gives w a catch-up watch from w.next whose start is not
// below floor, a revision etcd is known to have compacted up to.
func (m *Machine) openCatchUpAbove(w *watcher, floor int64) {
	c := &catchUp{up: upWatch{id: m.upID()}, w: w, rev: w.next - 1}
	w.catchUp = c
	m.catchUps[c.up.id] = c
	m.stats.CatchUpsOpened++
	m.upstream(port.WatchCatchUp, createReq(c.up.id, w.key, w.end, m.upstreamStart(w.next, floor)))
}

func (m *Machine) closeCatchUp(w *watcher) {
	if c := w.catchUp; c != nil {
		delete(m.catchUps, c.up.id)
		w.catchUp = nil
		m.upstream(port.WatchCatchUp, cancelReq(c.up.id))
	}
}

// catchUpResponse handles a response for a catch-up watch.
func (m *Machine) catchUpResponse(c *catchUp, r *pb.WatchResponse) {
	w := c.w
	if w.state == fetching {
		m.awaitedCatchUp(c, r)
		return
	}
	switch kind, b := m.decode(port.WatchCatchUp, &c.up, r); kind {
	case upEnded:
		delete(m.catchUps, c.up.id)
		w.catchUp = nil
		m.releaseCompacted(port.WatchCatchUp, c.up.id, r)
		if r.CompactRevision != 0 && m.survives(w, r.CompactRevision) {
			// etcd compacted only revisions the watcher does not need.
			m.openCatchUpAbove(w, r.CompactRevision)
			return
		}
		m.endWatcher(w, r)
		return
	case upNothing:
		return
	case upProgress:
		c.rev = max(c.rev, r.Header.GetRevision())
		w.advance(c.rev)
		m.relayProgress([]*watcher{w}, r.Header.GetRevision())
	case upEvents:
		c.rev = max(c.rev, b.last)
		if !w.s.held() {
			m.deliver(w, b)
			w.advance(c.rev)
		}
	}
	if w.s.held() {
		// Held streams receive nothing: let the catch-up watch go and pick
		// up again from w.next when the stream drains.
		m.closeCatchUp(w)
		return
	}
	m.merge(c)
	m.checkProgress(w.s)
}

// merge moves a watcher from its catch-up watch into its range's group once
// the group's window reaches back to what the watcher has seen.
func (m *Machine) merge(c *catchUp) {
	w := c.w
	g := m.groups[w.rk]
	if g == nil || !g.covers(w.next) || w.catchUp != c || w.state != live {
		return // (a create waiting for etcd to accept its catch-up stays on it: awaitUpstream)
	}
	m.closeCatchUp(w)
	m.stats.Merged++
	m.join(w, g)
}

func (m *Machine) mergeAll() {
	for _, c := range m.sortedCatchUps() {
		if m.catchUps[c.up.id] == c {
			m.merge(c)
		}
	}
}
