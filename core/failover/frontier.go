package failover

import "time"

// frontier is the cluster's progress: when the most advanced member was
// first seen past each applied raft index. Raft indexes are the same on
// every member, so a member's lag is how long ago the cluster passed the
// index it reports now.
type frontier struct {
	max     uint64
	samples []sample // ascending in both time and index
}

type sample struct {
	at    time.Time
	index uint64
}

// observe records a member's applied index seen at now. Samples older than
// what lag can need (4 × timeout) are dropped, so the frontier holds at most
// one sample per probe answer in that window.
func (f *frontier) observe(now time.Time, index uint64, timeout time.Duration) {
	if index <= f.max {
		return
	}
	f.max = index
	f.samples = append(f.samples, sample{now, index})
	keep := 4 * timeout
	drop := 0
	for drop+1 < len(f.samples) && now.Sub(f.samples[drop+1].at) >= keep {
		drop++
	}
	if drop > 0 {
		f.samples = append(f.samples[:0], f.samples[drop:]...)
	}
}

// lag is how far behind the cluster mb was when it last answered: the time
// between the cluster first passing mb's applied index and that answer. A
// member whose index is unknown is not behind. (After samples were dropped,
// the lag of a member behind all of them is at least 4 × timeout, more than
// any bound it is compared with, though the figure itself is then short.)
func (f *frontier) lag(mb *member) time.Duration {
	if mb.applied == 0 || mb.applied >= f.max {
		return 0
	}
	for _, s := range f.samples {
		if s.index > mb.applied {
			return max(0, mb.answeredAt.Sub(s.at))
		}
	}
	return 0
}
