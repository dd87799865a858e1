package watch

// Stats are the machine's counters.
type Stats struct {
	Watchers       int   // client watchers now (creates not yet answered included)
	GroupsOpened   int64 // shared upstream watches opened
	CatchUpsOpened int64 // catch-up upstream watches opened
	Merged         int64 // watchers moved from a catch-up watch into their group
	Rewinds        int64 // group upstream watches reopened from an earlier revision
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
}

// Stats returns the counters.
func (m *Machine) Stats() Stats { return m.stats }

// Gauges counts the machine's current state; it walks every group.
func (m *Machine) Gauges() Gauges {
	g := Gauges{Streams: len(m.streams), Groups: len(m.shared), CatchUps: len(m.catchUps)}
	for _, gr := range m.groups {
		g.WindowEvents += gr.windowLen
	}
	return g
}
