package watch

import (
	"time"

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
// On a cluster where nothing is written the group is pulled back instead:
// its upstream watch is opened again one revision earlier (the events of
// that revision, if any, are ones its watchers do not want, and the group
// records nothing at or below its revision). That happens at once when a
// progress request is to go out on the shared stream, and otherwise once
// the watch has been in the future for Config.FutureHold, so that idle
// watchers get etcd's progress notifications as they would from etcd.

// future is a group whose upstream watch, with ID id, started past the
// latest revision seen, at the time at.
type future struct {
	g  *group
	id int64
	at time.Time
}

// noteFuture records g's upstream watch if it started past the latest
// revision seen.
func (m *Machine) noteFuture(g *group) {
	if g.up.start > m.lastRev {
		m.futures = append(m.futures, future{g: g, id: g.up.id, at: m.now})
	}
}

// pullBackFutures pulls back the groups whose upstream watch still starts
// past the latest revision seen: all of them, or only those that have been
// so for Config.FutureHold. Groups since closed or reopened, and watches
// etcd's revision has reached, are forgotten.
func (m *Machine) pullBackFutures(all bool) {
	i := 0
	for ; i < len(m.futures); i++ {
		f := m.futures[i]
		if m.shared[f.id] != f.g || f.g.up.start <= m.lastRev {
			continue
		}
		if !all && m.now.Sub(f.at) < m.cfg.FutureHold {
			break // the rest are younger still
		}
		if fault("future-kept") {
			continue
		}
		m.pullBack(f.g)
	}
	clear(m.futures[:i])
	m.futures = append(m.futures[:0], m.futures[i:]...)
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
