package watch

import (
	"errors"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// Creates with a token. etcd checks a direct client's permission when it
// creates the client's watch, and never again. The revision fetch makes
// that check with the client's token; but a watcher that needs an upstream
// watch not yet open (a new group, or a catch-up watch of its own) is
// checked by etcd once more, under the lane's token, when that watch is
// created a moment later. Were the client told created first, a permission
// revoked in between would end a watch it had been told etcd accepted. So
// such a create is answered only once etcd has accepted the upstream watch
// that will serve it, and etcd's refusal of that watch is the create's
// refusal: what a direct client whose create reached etcd after the revoke
// gets.

// awaitUpstream reports whether w, a create whose revision has been
// fetched, must still wait for etcd to accept the upstream watch that will
// serve it; it opens that watch when none is. A create whose turn has not
// come (head false) opens only a group: a catch-up watch would bring it
// events before it could take them.
func (m *Machine) awaitUpstream(w *watcher, head bool) bool {
	r := w.result
	if !m.checked() || r.Err != nil || fault("auth-created-early") {
		return false
	}
	if head && w.chosen != 0 && w.s.watchers[w.chosen] != nil {
		return false // refused as a duplicate ID: nothing to open for it
	}
	if c := w.catchUp; c != nil {
		return !c.up.confirmed
	}
	rev := r.Header.GetRevision()
	w.next = w.start
	if w.start == 0 {
		w.next = rev + 1
	}
	g := m.groups[w.rk]
	if g == nil && !w.compacted {
		g = m.newGroup(w.rk, w.key, w.end, min(w.next, rev+1), w.progressNotify)
	}
	if w.compacted || !g.covers(w.next) {
		// Behind the group's window, or at a compacted revision (etcd
		// answers created, then the compaction): a catch-up watch of its
		// own. A rewind would have etcd check every watcher of the group
		// again.
		if !head {
			return true
		}
		m.unawait(w)
		m.openCatchUp(w)
		return true
	}
	// Pulled back now, not when it joins: the create waits for etcd to
	// accept the watch that will serve it.
	m.pullBackFor(w, g)
	if g.up.confirmed {
		return false
	}
	if w.awaits != g {
		w.awaits = g
		g.waiting = append(g.waiting, w)
	}
	return true
}

// checked reports whether etcd checks a token on the machine's upstream
// creates: on every lane but the default one, whose streams carry none.
func (m *Machine) checked() bool { return m.cfg.Lane != port.DefaultLane }

// groupAccepted answers, in their turn, the creates that waited for etcd
// to accept g's upstream watch.
func (m *Machine) groupAccepted(g *group) {
	ws := g.waiting
	g.waiting = nil
	for _, w := range ws {
		w.awaits = nil
		m.flushQueue(w.s)
	}
}

// awaitEnded handles etcd ending, or refusing, the upstream watch that the
// creates ws waited for: a refusal is each one's refusal; a compaction of
// a create's start revision makes it a create at a compacted revision;
// else it finds another. All are settled before any stream goes on, so
// that none opens a new watch for a create that etcd has just refused.
func (m *Machine) awaitEnded(ws []*watcher, r *pb.WatchResponse) {
	for _, w := range ws {
		w.awaits = nil
		switch {
		case r.CompactRevision != 0:
			w.compacted = w.compacted || !m.survives(w, r.CompactRevision)
		case r.CancelReason != "":
			w.result = &port.FetchResult{Header: r.Header, Err: errors.New(r.CancelReason)}
		}
	}
	for _, w := range ws {
		m.flushQueue(w.s)
	}
}

// awaitedCatchUp handles a response for the catch-up watch opened for a
// create still waiting for it: etcd sends nothing for a watch before its
// created.
func (m *Machine) awaitedCatchUp(c *catchUp, r *pb.WatchResponse) {
	w := c.w
	switch kind, _ := m.decode(port.WatchCatchUp, &c.up, r); kind {
	case upEnded:
		delete(m.catchUps, c.up.id)
		w.catchUp = nil
		m.releaseCompacted(port.WatchCatchUp, c.up.id, r)
		m.awaitEnded([]*watcher{w}, r)
	case upNothing:
		if c.up.confirmed {
			m.flushQueue(w.s)
		}
	}
}

// forgetCreate lets go of what a create not answered yet holds upstream,
// when its stream closes.
func (m *Machine) forgetCreate(w *watcher) {
	m.closeCatchUp(w)
	m.unawait(w)
}

// unawait takes w off the list of the group it waits for, and closes the
// group of its range if nothing else holds it (it may have been opened for
// w, and accepted since).
func (m *Machine) unawait(w *watcher) {
	if g := w.stopWaiting(); g != nil {
		m.closeIdle(g)
	}
	m.closeIdle(m.groups[w.rk])
}

// stopWaiting takes w off the list of the group it waits for, and returns
// that group.
func (w *watcher) stopWaiting() *group {
	g := w.awaits
	if g != nil {
		w.awaits = nil
		g.waiting = slices.DeleteFunc(g.waiting, func(x *watcher) bool { return x == w })
	}
	return g
}

// closeIdle closes g if it is open with no watcher and no create waiting
// for it: one opened for a create that is not served after all.
func (m *Machine) closeIdle(g *group) {
	if g != nil && len(g.watchers) == 0 && len(g.waiting) == 0 && m.groups[g.rk] == g {
		m.closeGroup(g)
	}
}
