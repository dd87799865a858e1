package port

import (
	"slices"
	"time"
)

// Config sets the Outbox's bounds.
type Config struct {
	// StreamBufferBytes bounds the bytes queued for one client stream and
	// not yet reported written; a stream over it is held until it drains
	// below half.
	StreamBufferBytes int
	// TotalBufferBytes bounds the bytes queued for all client streams
	// together: while the total is over it, a stream is held once it has
	// more than HeldFloorBytes queued, and a held stream resumes only
	// below half that floor (or once the total is back under the bound,
	// below half its own bound). Streams that drain as fast as they are
	// sent to keep less than the floor queued and are never held for it,
	// so many slow or stalled clients cannot grow the proxy's memory past
	// TotalBufferBytes plus the floor per stream.
	TotalBufferBytes int
	// RetryInterval is how soon a fetch that failed for a transport reason
	// is tried again.
	RetryInterval time.Duration
}

// DefaultConfig returns bounds suited to a production proxy.
func DefaultConfig() Config {
	return Config{StreamBufferBytes: 4 << 20, TotalBufferBytes: 256 << 20, RetryInterval: 100 * time.Millisecond}
}

// HeldFloorBytes is what a stream may have queued and never be held for
// the total bound (see Config.TotalBufferBytes); half its own bound if
// that is less.
const HeldFloorBytes = 64 << 10

// Outbox collects what the machines produce in a step and applies the flow
// control and fetch batching they share. The composite node owns one and
// hands it to every machine.
type Outbox struct {
	cfg Config
	now time.Time

	sends    []Send
	upstream []UpstreamRequest
	fetchIDs []FetchID // fetches to hand out, in order
	probes   []Probe
	switches []Switch
	ends     []End

	leaseChecks []LeaseCheck
	answers     []Answer
	lanes       []LaneStart
	laneEnds    []LaneEnd

	// internal streams: what is sent to them goes to their function at
	// once (see Subscribe).
	internal map[StreamID]func(Send)

	flows map[StreamID]*Flow

	fetches   map[FetchID]*fetch
	nextFetch FetchID
	// batches holds this step's plain fetches open for joining until
	// Advance, by revision (0: the current revision).
	batches map[int64]*fetch

	total      int   // bytes queued for all client streams
	holds      int64 // times a stream was held
	totalHolds int64 // of which for the total bound
}

// Flow is one client stream's flow control: the bytes handed out for it
// and not yet written, and whether it is held.
type Flow struct {
	queued int
	held   bool
}

// Held reports whether the stream is over its bound: machines queue nothing
// more for it until it drains.
func (f *Flow) Held() bool { return f.held }

type fetch struct {
	req      Fetch
	retrying bool
	retryAt  time.Time
}

// NewOutbox returns an empty Outbox; zero fields of cfg take their
// defaults.
func NewOutbox(cfg Config, now time.Time) *Outbox {
	d := DefaultConfig()
	if cfg.StreamBufferBytes <= 0 {
		cfg.StreamBufferBytes = d.StreamBufferBytes
	}
	if cfg.TotalBufferBytes <= 0 {
		cfg.TotalBufferBytes = d.TotalBufferBytes
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = d.RetryInterval
	}
	return &Outbox{cfg: cfg, now: now, flows: map[StreamID]*Flow{}, fetches: map[FetchID]*fetch{}, batches: map[int64]*fetch{}}
}

// Tick advances the clock: fetches whose retry is due are handed out again.
func (o *Outbox) Tick(now time.Time) {
	o.now = now
	var due []FetchID
	for id, f := range o.fetches {
		if f.retrying && !now.Before(f.retryAt) {
			due = append(due, id)
		}
	}
	slices.Sort(due)
	for _, id := range due {
		o.fetches[id].retrying = false
		o.fetchIDs = append(o.fetchIDs, id)
	}
}

// Pending is the number of outputs waiting to be handed out.
func (o *Outbox) Pending() int {
	return len(o.sends) + len(o.upstream) + len(o.fetchIDs) + len(o.probes) + len(o.switches) + len(o.ends) + len(o.leaseChecks) + len(o.answers) + len(o.lanes) + len(o.laneEnds)
}

// HasReady reports whether there is anything to hand out.
func (o *Outbox) HasReady() bool { return o.Pending() > 0 }

// Ready returns what was produced since the last Advance. It changes
// nothing: calling it twice gives the same. Its slices are valid until the
// step after the next Advance.
func (o *Outbox) Ready() Ready {
	r := Ready{Sends: o.sends, Upstream: o.upstream, Probes: o.probes, Switches: o.switches, Ends: o.ends, LeaseChecks: o.leaseChecks, Answers: o.answers, Lanes: o.lanes, LaneEnds: o.laneEnds}
	for _, id := range o.fetchIDs {
		if f := o.fetches[id]; f != nil {
			r.Fetches = append(r.Fetches, f.req)
		}
	}
	return r
}

// Advance acknowledges the last Ready: the shell has carried it out, and
// the current-revision fetch it held is closed to further joiners. The
// next step reuses the Ready's slices, so the caller must be done with
// them (the sends of one Ready can number one per watcher).
func (o *Outbox) Advance() {
	o.sends, o.upstream, o.fetchIDs = reuse(o.sends), reuse(o.upstream), nil
	o.probes, o.switches, o.ends = reuse(o.probes), reuse(o.switches), reuse(o.ends)
	o.leaseChecks, o.answers = reuse(o.leaseChecks), reuse(o.answers)
	o.lanes, o.laneEnds = reuse(o.lanes), reuse(o.laneEnds)
	clear(o.batches)
}

// reuse empties a step's output slice for the next step: what it held is
// dropped for the collector, and the room a burst grew is let go once
// steps use far less of it.
func reuse[T any](s []T) []T {
	clear(s)
	if cap(s) > 1024 && len(s) < cap(s)/4 {
		return nil
	}
	return s[:0]
}

// ---- client streams and flow control ----

// OpenStream starts flow control for a client stream and returns it, for
// the machine that serves the stream.
func (o *Outbox) OpenStream(id StreamID) *Flow {
	if o.flows[id] == nil {
		o.flows[id] = &Flow{}
	}
	return o.flows[id]
}

// Subscribe opens an internal stream: a stream a machine serves like a
// client's, but whose responses are handed to fn within the step that
// sends them rather than to the shell. Nothing is queued for it, so it is
// never held. fn must not step the machines.
func (o *Outbox) Subscribe(id StreamID, fn func(Send)) *Flow {
	if o.internal == nil {
		o.internal = map[StreamID]func(Send){}
	}
	o.internal[id] = fn
	return o.OpenStream(id)
}

// CloseStream forgets a client stream; nothing more is sent to it.
func (o *Outbox) CloseStream(id StreamID) {
	o.forget(id)
	delete(o.internal, id)
}

// Send queues a response for a client stream and holds the stream once it
// is over its bound. Responses for a stream that is not open are dropped.
func (o *Outbox) Send(s Send) {
	f := o.flows[s.Stream]
	if f == nil {
		return
	}
	if len(o.internal) > 0 {
		if fn := o.internal[s.Stream]; fn != nil {
			fn(s)
			return
		}
	}
	o.sends = append(o.sends, s)
	f.queued += s.Size
	o.total += s.Size
	if f.held {
		return
	}
	if f.queued > o.cfg.StreamBufferBytes {
		f.held = true
		o.holds++
	} else if o.overTotal() && f.queued > o.floor() {
		f.held = true
		o.holds++
		o.totalHolds++
	}
}

func (o *Outbox) overTotal() bool { return o.total > o.cfg.TotalBufferBytes }

func (o *Outbox) floor() int { return min(HeldFloorBytes, o.cfg.StreamBufferBytes/2) }

// forget drops a stream's flow control and its queued bytes from the
// total.
func (o *Outbox) forget(id StreamID) {
	if f := o.flows[id]; f != nil {
		o.total -= f.queued
		delete(o.flows, id)
	}
}

// Written reports n bytes of a stream's responses written by the shell. It
// returns true when that resumes a held stream (it has drained below half
// its bound): the machine serving it must then catch it up.
func (o *Outbox) Written(id StreamID, n int) bool {
	f := o.flows[id]
	if f == nil {
		return false
	}
	n = min(n, f.queued)
	f.queued -= n
	o.total -= n
	resume := o.cfg.StreamBufferBytes / 2
	if o.overTotal() {
		resume = o.floor() / 2
	}
	if f.held && f.queued <= resume {
		f.held = false
		return true
	}
	return false
}

// ---- upstream streams ----

// Upstream queues a request for an upstream stream.
func (o *Outbox) Upstream(r UpstreamRequest) { o.upstream = append(o.upstream, r) }

// ---- members ----

// Probe queues a member probe.
func (o *Outbox) Probe(p Probe) { o.probes = append(o.probes, p) }

// Switch queues a switch of the member in use.
func (o *Outbox) Switch(s Switch) { o.switches = append(o.switches, s) }

// End queues the end of a client stream and forgets its flow control.
func (o *Outbox) End(e End) {
	o.ends = append(o.ends, e)
	o.forget(e.Stream)
}

// ---- gauges ----

// Holds counts the times a stream went over its bound.
func (o *Outbox) Holds() int64 { return o.holds }

// TotalHolds counts the holds made for the total bound (see
// Config.TotalBufferBytes); they are also in Holds.
func (o *Outbox) TotalHolds() int64 { return o.totalHolds }

// FlowStats are the flow control's gauges.
type FlowStats struct {
	Streams        int // client streams open
	QueuedBytes    int // bytes handed out and not yet written
	HeldStreams    int // streams over their bound now
	PendingFetches int // revision fetches not answered yet
}

// Stats counts the Outbox's state; it walks every stream.
func (o *Outbox) Stats() FlowStats {
	s := FlowStats{Streams: len(o.flows), PendingFetches: len(o.fetches)}
	for _, f := range o.flows {
		s.QueuedBytes += f.queued
		if f.held {
			s.HeldStreams++
		}
	}
	return s
}
