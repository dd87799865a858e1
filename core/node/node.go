package node

import (
	"time"

	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/watch"
)

// Config sets the node's bounds: the flow control and fetch retries it
// owns, and each machine's.
type Config struct {
	Port  port.Config
	Watch watch.Config
}

// Node is the composite state machine. It is not safe for concurrent use:
// one loop owns it.
type Node struct {
	out   *port.Outbox
	watch *watch.Machine
}

// New returns a node with cfg's bounds; now is the clock's reading.
func New(cfg Config, now time.Time) *Node {
	out := port.NewOutbox(cfg.Port, now)
	return &Node{out: out, watch: watch.New(cfg.Watch, out, now)}
}

// Step feeds one input.
func (n *Node) Step(in Input) {
	switch in := in.(type) {
	case Tick:
		n.out.Tick(in.Now)
		n.watch.Tick(in.Now)
	case OpenStream:
		n.watch.OpenStream(in.Stream, in.Token, n.out.OpenStream(in.Stream))
	case CloseStream:
		n.watch.CloseStream(in.Stream)
		n.out.CloseStream(in.Stream)
	case WatchCreate:
		n.watch.Create(in.Stream, in.Req)
	case WatchCancel:
		n.watch.Cancel(in.Stream, in.WatchID)
	case WatchProgress:
		n.watch.RequestProgress(in.Stream)
	case Written:
		if n.out.Written(in.Stream, in.Bytes) {
			n.watch.Resume(in.Stream)
		}
	case UpstreamResponse:
		if in.Watch != nil {
			n.watch.UpstreamResponse(in.Upstream, in.Watch)
		}
	case UpstreamLost:
		n.watch.UpstreamLost(in.Upstream)
	case Fetched:
		if For, ok := n.out.Fetched(in.ID, in.Result); ok && For.Has(port.Watch) {
			n.watch.Fetched(in.ID, in.Result)
		}
	}
}

// Tick tells the node the time: Step(Tick{now}).
func (n *Node) Tick(now time.Time) { n.Step(Tick{Now: now}) }

// Pending is the number of outputs Ready would hand out now: a caller that
// feeds several inputs per step can stop while a step is still small.
func (n *Node) Pending() int { return n.out.Pending() }

// HasReady reports whether Ready has anything to hand out.
func (n *Node) HasReady() bool { return n.out.HasReady() }

// Ready returns what the caller must do. It changes nothing; Advance
// acknowledges it, after which the next step reuses its slices.
func (n *Node) Ready() port.Ready { return n.out.Ready() }

// Advance acknowledges the last Ready.
func (n *Node) Advance() { n.out.Advance() }

// Stats are the node's counters.
type Stats struct {
	Watch watch.Stats
	Holds int64 // times a client stream went over its bound
}

// Gauges are the node's current state.
type Gauges struct {
	Watch watch.Gauges
	Flow  port.FlowStats
}

// Stats returns the counters; it is cheap.
func (n *Node) Stats() Stats { return Stats{Watch: n.watch.Stats(), Holds: n.out.Holds()} }

// Gauges counts the node's current state; it walks every stream and group,
// so it is meant for a metrics scrape, not for every step.
func (n *Node) Gauges() Gauges { return Gauges{Watch: n.watch.Gauges(), Flow: n.out.Stats()} }

// InspectWatcher tells where a client watcher stands, for tests and the
// simulation; it changes nothing.
func (n *Node) InspectWatcher(id port.StreamID, watchID int64) (watch.WatcherInfo, bool) {
	return n.watch.Inspect(id, watchID)
}
