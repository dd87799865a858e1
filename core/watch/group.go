package watch

import (
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// rangeKey identifies a key range exactly as clients asked for it.
type rangeKey struct{ key, end string }

// group is the client watchers on one key range, fed by one upstream watch
// on the shared upstream stream.
type group struct {
	up       upWatch
	rk       rangeKey
	key, end []byte
	// rev is the group's progress: every event of the range up to rev has
	// reached the group. base is where the window starts: the window holds
	// every event in (base, rev]. upRev is how far the current upstream
	// watch has brought the group: below rev while a rewound or reopened
	// upstream watch catches up. Every member whose stream is not held has
	// every event up to upRev: its next revision is past it (advance).
	rev, base, upRev int64
	window           []*batch
	windowLen        int // events in window
	watchers         []*watcher
	// While the upstream watch is rewound (see Machine.rewind), rewindBase
	// is where the window began before, and prefix collects the older
	// events until the upstream watch has passed rewindBase.
	rewindBase int64
	prefix     []*batch
	// waiting holds creates with a token, fetched but not answered yet,
	// that wait for etcd to accept the group's upstream watch.
	waiting []*watcher
}

// newGroup opens a group for a range, its upstream watch bringing every
// event from revision from on; notify: for a watcher that asked for
// progress notifications.
func (m *Machine) newGroup(rk rangeKey, key, end []byte, from int64, notify bool) *group {
	g := &group{rk: rk, key: key, end: end, rev: from - 1, base: from - 1, upRev: from - 1}
	m.groups[rk] = g
	m.openGroupWatch(g, from, notify)
	return g
}

// openGroupWatch opens g's upstream watch, bringing every event from
// revision from on. It starts exactly at from, even past the latest
// revision seen, unless notify (a watcher wants progress notifications):
// then not past it (see future.go).
func (m *Machine) openGroupWatch(g *group, from int64, notify bool) {
	start := from
	if notify {
		start = m.upstreamStart(from, 0)
	}
	g.up = upWatch{id: m.upID(), start: start}
	m.shared[g.up.id] = g
	m.stats.GroupsOpened++
	m.upstream(port.WatchShared, createReq(g.up.id, g.key, g.end, start))
	m.noteFuture(g)
}

// notifies reports whether a watcher among ws asked for progress
// notifications.
func notifies(ws []*watcher) bool {
	for _, w := range ws {
		if w.progressNotify {
			return true
		}
	}
	return false
}

// closeGroup forgets a group that has no watchers left.
func (m *Machine) closeGroup(g *group) {
	delete(m.groups, g.rk)
	delete(m.shared, g.up.id)
	if fault("leak-upstream") {
		return
	}
	m.upstream(port.WatchShared, cancelReq(g.up.id))
}

// rewind reopens g's upstream watch from an earlier revision. Events the
// group already has are delivered again only to watchers that have not
// seen them (each watcher skips what lies before its next revision); events
// older than the window are collected and put in front of it once the
// upstream watch has caught up with where the window began.
func (m *Machine) rewind(g *group, from int64) {
	if g.rewindBase == 0 {
		g.rewindBase = g.base
	}
	g.prefix = nil
	g.base, g.upRev = from-1, from-1
	delete(m.shared, g.up.id)
	m.upstream(port.WatchShared, cancelReq(g.up.id))
	m.stats.Rewinds++
	m.openGroupWatch(g, from, false)
}

// groupResponse handles a response for a group's upstream watch.
func (m *Machine) groupResponse(g *group, r *pb.WatchResponse) {
	switch kind, b := m.decode(port.WatchShared, &g.up, r); kind {
	case upNothing:
		if g.up.confirmed && len(g.waiting) > 0 {
			m.groupAccepted(g)
		}
	case upEnded:
		m.groupEnded(g, r)
	case upProgress:
		m.groupProgress(g, r.Header.GetRevision())
		m.relayProgress(g.watchers, r.Header.GetRevision())
		m.checkAllProgress()
	case upEvents:
		if g.rewindBase != 0 {
			g.recordRewound(b, m.cfg.HistoryEvents)
		} else {
			g.record(b, m.cfg.HistoryEvents)
		}
		g.upRev = max(g.upRev, b.last)
		for _, w := range g.watchers {
			if !w.s.held() {
				m.deliver(w, b)
				w.advance(g.upRev)
			}
		}
		m.checkAllProgress()
	}
}

// groupProgress records that the group's upstream watch has brought every
// event up to rev: so has every member whose stream is not held.
func (m *Machine) groupProgress(g *group, rev int64) {
	g.progress(rev, m.cfg.HistoryEvents)
	g.upRev = max(g.upRev, rev)
	for _, w := range g.watchers {
		w.advance(g.upRev)
	}
}

// groupEnded handles etcd ending a group's upstream watch: compaction, or a
// cancel with a reason. Watchers that etcd would have ended too get etcd's
// response; the rest move to a new group.
func (m *Machine) groupEnded(g *group, r *pb.WatchResponse) {
	delete(m.shared, g.up.id)
	delete(m.groups, g.rk)
	m.releaseCompacted(port.WatchShared, g.up.id, r)
	watchers, waiting := g.watchers, g.waiting
	g.watchers, g.waiting = nil, nil
	var survivors []*watcher
	for _, w := range watchers {
		w.group = nil
		if r.CompactRevision != 0 && m.survives(w, r.CompactRevision) {
			survivors = append(survivors, w)
			continue
		}
		m.endWatcher(w, r)
	}
	if len(survivors) > 0 {
		from := survivors[0].next
		for _, w := range survivors {
			from = min(from, w.next)
		}
		// Not past the latest revision seen, as in complete: a survivor
		// may start far in the future, and a group's upstream watch is
		// pulled back only one revision (see future.go).
		// Not below the compaction etcd has just reported.
		from = max(min(from, m.lastRev+1), r.CompactRevision)
		ng := m.newGroup(g.rk, g.key, g.end, from, notifies(survivors))
		for _, w := range survivors {
			m.join(w, ng)
		}
	}
	m.awaitEnded(waiting, r)
}

// survives reports whether a watcher outlives the compaction of its
// group's upstream watch at rev: etcd compacts only revisions below rev, so
// a watcher that needs nothing older goes on.
func (m *Machine) survives(w *watcher, rev int64) bool {
	if fault("compaction-boundary") {
		return w.next > rev
	}
	return w.next >= rev
}

// record appends a batch to the window and evicts the oldest batches beyond
// limit events, always keeping the newest.
func (g *group) record(b *batch, limit int) {
	if b.last <= g.rev {
		return // a rewound upstream watch bringing again what the window has
	}
	if first := b.events[0].Kv.ModRevision; first <= g.rev {
		rev := g.rev
		b = b.slice(func(r int64) bool { return r > rev })
	}
	g.window = append(g.window, b)
	g.windowLen += len(b.events)
	g.evict(limit)
	if b.last > g.rev {
		g.rev = b.last
	}
}

// evict drops the oldest batches beyond limit events, keeping the newest.
func (g *group) evict(limit int) {
	for len(g.window) > 1 && g.windowLen > limit {
		g.base = g.window[0].last
		g.windowLen -= len(g.window[0].events)
		g.window[0] = nil
		g.window = g.window[1:]
	}
}

// covers reports whether a watcher needing events from next on can be
// served from the window and the live stream.
func (g *group) covers(next int64) bool { return next > g.base }

func (g *group) remove(w *watcher) {
	if i := slices.Index(g.watchers, w); i >= 0 {
		g.watchers = slices.Delete(g.watchers, i, i+1)
	}
}

// recordRewound records a batch from a rewound upstream watch: events up to
// where the window began go to the prefix, events the window already holds
// are skipped, newer events are recorded as usual. Once the upstream watch
// has passed where the window began, the prefix goes in front of it.
func (g *group) recordRewound(b *batch, limit int) {
	rewindBase, rev := g.rewindBase, g.rev
	if old := b.slice(func(r int64) bool { return r <= rewindBase }); old != nil {
		g.prefix = append(g.prefix, old)
	}
	if b.last > g.rewindBase {
		g.endRewind()
	}
	if fresh := b.slice(func(r int64) bool { return r > rev }); fresh != nil {
		g.record(fresh, limit)
	} else {
		g.evict(limit)
	}
}

// endRewind puts the events collected by a rewind in front of the window.
func (g *group) endRewind() {
	n := 0
	for _, p := range g.prefix {
		n += len(p.events)
	}
	g.window = append(g.prefix, g.window...)
	g.windowLen += n
	g.prefix = nil
	g.rewindBase = 0
}

// progress records that the upstream watch has delivered every event up to
// rev.
func (g *group) progress(rev int64, limit int) {
	if g.rewindBase != 0 && rev >= g.rewindBase {
		g.endRewind()
		g.evict(limit)
	}
	if rev > g.rev {
		g.rev = rev
	}
}
