package watch

import "github.com/etcdproxy/etcdproxy/core/port"

// Stats are the machine's counters.
type Stats struct {
	Watchers       int   // client watchers now (creates not yet answered included)
	GroupsOpened   int64 // shared upstream watches opened
	CatchUpsOpened int64 // catch-up upstream watches opened
	Merged         int64 // watchers moved from a catch-up watch into their group
	Rewinds        int64 // group upstream watches reopened from an earlier revision
	PulledBack     int64 // group upstream watches reopened one revision back (see future.go)
	Compacted      int64 // watchers ended by compaction
	EventsReceived int64 // events from etcd
	EventsSent     int64 // events handed to client watchers
}

// Gauges are the machine's current state, counted on demand.
type Gauges struct {
	Streams      int // client watch streams
	Groups       int // shared upstream watches open
	CatchUps     int // catch-up upstream watches open
	WindowEvents int // events held in history windows
	Rewinding    int // groups whose upstream watch is rewound now
}

// Stats returns the counters.
func (m *Machine) Stats() Stats { return m.stats }

// Gauges counts the machine's current state; it walks every group.
func (m *Machine) Gauges() Gauges {
	g := Gauges{Streams: len(m.streams), Groups: len(m.shared), CatchUps: len(m.catchUps)}
	for _, gr := range m.groups {
		g.WindowEvents += gr.windowLen
		if gr.rewindBase != 0 {
			g.Rewinding++
		}
	}
	return g
}

// WatcherInfo is where one client watcher stands, for tests and the
// simulation's coverage counts.
type WatcherInfo struct {
	Live      bool // created and not ended
	InGroup   bool // served by its range's group
	Rewinding bool // its group's upstream watch is rewound behind its place
	// GroupRewound: its group's upstream watch is rewound (replaying
	// history for a watcher that started before the window): nothing new
	// reaches any of the group's watchers until it has caught up.
	GroupRewound bool
	CatchUp      bool // served by a catch-up watch
	Held         bool // its stream is over its bound
	// Next is the first revision it has not been given; GroupUpstream is
	// its group's upstream watch ID (0 when not in a group).
	Next          int64
	GroupUpstream int64
}

// Inspect tells where watcher watchID of stream id stands.
func (m *Machine) Inspect(id port.StreamID, watchID int64) (WatcherInfo, bool) {
	s := m.streams[id]
	if s == nil || s.watchers[watchID] == nil {
		return WatcherInfo{}, false
	}
	w := s.watchers[watchID]
	var up int64
	if w.group != nil {
		up = w.group.up.id
	}
	return WatcherInfo{
		Next:          w.next,
		GroupUpstream: up,
		Live:          w.state == live,
		InGroup:       w.group != nil,
		Rewinding:     w.group != nil && w.group.rewindBase != 0 && w.next <= w.group.rewindBase,
		GroupRewound:  w.group != nil && w.group.rewindBase != 0,
		CatchUp:       w.catchUp != nil,
		Held:          s.held(),
	}, true
}

// Add adds o's counters to s (the composite sums its machines').
func (s *Stats) Add(o Stats) {
	s.Watchers += o.Watchers
	s.GroupsOpened += o.GroupsOpened
	s.CatchUpsOpened += o.CatchUpsOpened
	s.Merged += o.Merged
	s.Rewinds += o.Rewinds
	s.PulledBack += o.PulledBack
	s.Compacted += o.Compacted
	s.EventsReceived += o.EventsReceived
	s.EventsSent += o.EventsSent
}

// Add adds o's gauges to g.
func (g *Gauges) Add(o Gauges) {
	g.Streams += o.Streams
	g.Groups += o.Groups
	g.CatchUps += o.CatchUps
	g.WindowEvents += o.WindowEvents
	g.Rewinding += o.Rewinding
}

// Idle reports whether the machine holds nothing: no stream, watcher,
// upstream watch or revision fetch.
func (m *Machine) Idle() bool {
	return len(m.streams) == 0 && len(m.shared) == 0 && len(m.catchUps) == 0 && len(m.fetches) == 0
}
