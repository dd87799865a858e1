package watch

import "slices"

// Stats are the machine's counters and gauges, for metrics.
type Stats struct {
	Watchers       int   // client watchers now
	GroupsOpened   int64 // shared upstream watches opened
	OwnOpened      int64 // single-watcher upstream watches opened
	Merged         int64 // watchers moved from their own upstream watch into a group
	Rewinds        int64 // group upstream watches reopened from an earlier revision
	Held           int64 // times a client stream went over its buffer bound
	Compacted      int64 // watchers ended by compaction
	EventsReceived int64 // events from etcd
	EventsSent     int64 // events handed to client watchers
}

// Gauges that are counted on demand.
type Gauges struct {
	Groups       int // shared upstream watches open
	Own          int // single-watcher upstream watches open
	WindowEvents int // events held in history windows
	PendingFetch int // revision fetches not answered yet
	Streams      int // client streams
	QueuedBytes  int // bytes handed out and not yet written
	HeldStreams  int // streams over their buffer bound now
}

// Stats returns the counters.
func (m *Machine) Stats() Stats { return m.stats }

// Gauges counts the machine's current state.
func (m *Machine) Gauges() Gauges {
	g := Gauges{Groups: len(m.shared), Own: len(m.owns), PendingFetch: len(m.fetches), Streams: len(m.streams)}
	for _, gr := range m.groups {
		g.WindowEvents += gr.windowLen
	}
	for _, s := range m.streams {
		g.QueuedBytes += s.queued
		if s.held {
			g.HeldStreams++
		}
	}
	return g
}

func sortInt64s(s []int64)   { slices.Sort(s) }
func sortUint64s(s []uint64) { slices.Sort(s) }
