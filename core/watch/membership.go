package watch

import (
	"cmp"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// join adds w to g and replays what the window holds from w.next on.
func (m *Machine) join(w *watcher, g *group) {
	w.group = g
	g.watchers = append(g.watchers, w)
	m.pullBackFor(w, g)
	m.replay(w, g)
}

// replay gives w what g holds from w.next on; the rest reaches it live. A
// watcher behind a rewind gets only what the rewound upstream watch has
// brought so far: the window would skip the part still to come. Replay
// stops where the stream goes over its bound.
func (m *Machine) replay(w *watcher, g *group) {
	held, through := g.window, g.rev
	if g.rewindBase != 0 && w.next <= g.rewindBase {
		held, through = g.prefix, g.upRev
	}
	// The window is in revision order: skip what w has seen without
	// visiting it (a stream resumed after a burst replays from far into
	// a long window, once per watcher).
	first, _ := slices.BinarySearchFunc(held, w.next, func(b *batch, next int64) int { return cmp.Compare(b.last, next) })
	for _, b := range held[first:] {
		if w.s.held() {
			return
		}
		if b.last >= w.next {
			m.deliver(w, b)
		}
	}
	w.advance(through)
}

// leave takes w out of its group, closing the group when it was the last.
func (m *Machine) leave(w *watcher) {
	g := w.group
	if g == nil {
		return
	}
	w.group = nil
	g.remove(w)
	if len(g.watchers) == 0 && len(g.waiting) == 0 {
		m.closeGroup(g)
	}
}

// drop forgets a watcher entirely. Responses that end the watch must be
// queued before it: dropping may answer a progress request.
func (m *Machine) drop(w *watcher) {
	m.leave(w)
	if !(fault("cancel-held-catch-up") && w.s.held()) {
		m.closeCatchUp(w)
	}
	w.s.remove(w)
	if w.state != ended {
		m.stats.Watchers--
	}
	// A progress request may have been waiting only for this watcher.
	m.checkProgress(w.s)
}

// endWatcher passes etcd's end of a watch (compaction, or a cancel with a
// reason) on to w. Its watch ID stays taken, as in etcd, until the client
// cancels it.
func (m *Machine) endWatcher(w *watcher, r *pb.WatchResponse) {
	resp := &pb.WatchResponse{Header: r.Header, WatchId: w.id, Canceled: true, CompactRevision: r.CompactRevision, CancelReason: r.CancelReason}
	if r.CompactRevision != 0 {
		m.stats.Compacted++
	} else if r.Header.GetRevision() < w.told {
		resp.Header = m.headerAt(w.told)
	}
	// The end goes out before anything that ending the watcher sets off.
	m.reply(w, resp)
	m.leave(w)
	m.closeCatchUp(w)
	w.state = ended
	m.stats.Watchers--
	m.checkProgress(w.s)
}

// Resume catches up the watchers of a client stream that has drained below
// half its bound, after being held.
func (m *Machine) Resume(id port.StreamID) {
	s := m.streams[id]
	if s == nil {
		return
	}
	for _, w := range append([]*watcher(nil), s.order...) {
		m.resume(w)
	}
	m.checkProgress(s)
}

// resume puts a watcher of a stream that has drained back on track: from
// its group's window if that still reaches back to its next revision, else
// from a catch-up watch of its own.
func (m *Machine) resume(w *watcher) {
	if w.state != live || w.catchUp != nil || w.s.held() {
		return // not live, or its catch-up watch never stopped
	}
	if g := w.group; g != nil && g.covers(w.next) {
		m.replay(w, g)
		return
	}
	m.leave(w)
	if g := m.groups[w.rk]; g != nil && g.covers(w.next) {
		m.join(w, g)
		return
	}
	m.openCatchUp(w)
}
