package watch

import (
	"github.com/etcdproxy/etcdproxy/core/port"
)

// A group opened for watchers that start after the latest revision seen
// has its upstream watch start exactly there, one past etcd's revision.
// etcd counts such a watch as synced, so it sends the group's events the
// moment they are written; a watch starting at or below etcd's revision
// would be unsynced, and etcd brings an unsynced watch up to date only on
// its sync cycle (every 100 ms), late by up to that much.
//
// The price: while a watch on a stream starts past etcd's revision, etcd
// answers no progress request on the stream and sends the watch no
// progress notification. The first write anywhere in the store ends that.
// Until then:
//   - a group with a watcher that asked for progress notifications starts
//     one revision back from the first (the events of that revision, if
//     any, are ones its watchers do not want, and the group records
//     nothing at or below its revision), and a future group is pulled back
//     so (reopened one revision earlier) when such a watcher joins it, so
//     that etcd's notifications come on etcd's cadence;
//   - before a progress request goes out on the shared stream, every
//     future group is pulled back.

// future is a group whose upstream watch, with ID id, started past the
// latest revision seen.
type future struct {
	g  *group
	id int64
}

// noteFuture records g's upstream watch if it started past the latest
// revision seen.
func (m *Machine) noteFuture(g *group) {
	if m.isFuture(g) {
		m.futures = append(m.futures, future{g: g, id: g.up.id})
	}
}

// isFuture reports whether g's upstream watch starts past the latest
// revision seen.
func (m *Machine) isFuture(g *group) bool { return g.up.start > m.lastRev }

// pullBackFutures pulls back every group whose upstream watch still starts
// past the latest revision seen, and forgets the rest.
func (m *Machine) pullBackFutures() {
	for _, f := range m.futures {
		if m.shared[f.id] == f.g && m.isFuture(f.g) && !fault("future-kept") {
			m.pullBack(f.g)
		}
	}
	clear(m.futures)
	m.futures = m.futures[:0]
}

// pruneFutures forgets the groups since closed, reopened or reached by
// etcd's revision.
func (m *Machine) pruneFutures() {
	kept := m.futures[:0]
	for _, f := range m.futures {
		if m.shared[f.id] == f.g && m.isFuture(f.g) {
			kept = append(kept, f)
		}
	}
	clear(m.futures[len(kept):])
	m.futures = kept
}

// pullBackFor pulls g back if it is in the future and w, joining it or
// waiting for it, wants progress notifications: etcd would send it none.
func (m *Machine) pullBackFor(w *watcher, g *group) {
	if w.progressNotify && m.isFuture(g) && !fault("future-kept") {
		m.pullBack(g)
	}
}

// pullBack reopens g's upstream watch one revision before where it
// started.
func (m *Machine) pullBack(g *group) {
	start := g.up.start - 1
	delete(m.shared, g.up.id)
	m.upstream(port.WatchShared, cancelReq(g.up.id))
	g.up = upWatch{id: m.upID(), start: start}
	m.shared[g.up.id] = g
	m.stats.PulledBack++
	m.upstream(port.WatchShared, createReq(g.up.id, g.key, g.end, start))
}
