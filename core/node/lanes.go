package node

import (
	"slices"

	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/watch"
)

// Client watch streams are served by one watch machine per auth identity
// (a lane): watchers share a group only with watchers of the same
// identity, and each lane's upstream watches go on a pair of upstream
// streams of its own (port.Lane), which the shell opens with a token of
// that identity, so that etcd applies one identity's permissions to what
// the lane watches. Streams without a token (identity "") are the default
// lane, n.watch, which also serves the read cache's subscription. A lane
// other than the default is made for its first stream and dropped once its
// last stream has closed and its machine holds nothing.
type lane struct {
	idx      int
	identity string
	m        *watch.Machine
}

// laneFor returns the lane of identity, making it if needed (its
// upstream streams to be opened with token). Lane indexes are not reused,
// so that nothing still in flight for an ended lane reaches another.
func (n *Node) laneFor(identity, token string) *lane {
	if identity == "" {
		return n.defaultLane
	}
	if l := n.lanes[identity]; l != nil {
		return l
	}
	n.nextLane++
	cfg := n.cfg.Watch
	cfg.Lane = port.LaneOf(n.nextLane)
	l := &lane{idx: n.nextLane, identity: identity, m: watch.New(cfg, n.out, n.now)}
	n.lanes[identity] = l
	n.out.StartLane(port.LaneStart{Lane: cfg.Lane, Token: token})
	return l
}

// watchOf returns the watch machine serving client stream id (the default
// lane's for a stream it does not know).
func (n *Node) watchOf(id port.StreamID) *watch.Machine {
	if l := n.streamLane[id]; l != nil {
		return l.m
	}
	return n.watch
}

// laneOfUpstream returns the lane whose upstream stream u is.
func (n *Node) laneOfUpstream(u port.UpstreamID) *lane {
	if _, ok := port.DefaultLane.Kind(u); ok {
		return n.defaultLane
	}
	for _, l := range n.lanes {
		if _, ok := l.m.Lane().Kind(u); ok {
			return l
		}
	}
	return nil
}

// sortedLanes returns every lane, the default first, then by index (a
// fixed order: the node's outputs must not depend on map order).
func (n *Node) sortedLanes() []*lane {
	ls := make([]*lane, 0, len(n.lanes)+1)
	ls = append(ls, n.defaultLane)
	for _, l := range n.lanes {
		ls = append(ls, l)
	}
	slices.SortFunc(ls[1:], func(a, b *lane) int { return a.idx - b.idx })
	return ls
}

// dropIdleLane forgets lane l once it holds nothing, keeping its counters.
func (n *Node) dropIdleLane(l *lane) {
	if l == nil || l == n.defaultLane || !l.m.Idle() {
		return
	}
	n.retired.Add(l.m.Stats())
	delete(n.lanes, l.identity)
	n.out.EndLane(port.LaneEnd{Lane: l.m.Lane()})
}

// dropIdleLanes drops every lane that holds nothing.
func (n *Node) dropIdleLanes() {
	for _, l := range n.sortedLanes()[1:] {
		n.dropIdleLane(l)
	}
}
