package node

import (
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/simfault"
	"github.com/etcdproxy/etcdproxy/core/watch"
)

// Client watch streams are served by one watch machine per auth identity
// (a lane; the shell names identities: an etcd user, or a token of unknown
// user): watchers share a group only with watchers of the same identity,
// and each lane's upstream watches go on a pair of upstream streams of its
// own (port.Lane), which the shell opens with the token of the lane's
// first stream, so that etcd applies one identity's permissions to what
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
	n.laneAt[l.idx] = l
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

// laneOfUpstream returns the lane whose upstream stream u is (nil: none,
// or one that has ended).
func (n *Node) laneOfUpstream(u port.UpstreamID) *lane {
	idx, _, ok := u.Lane()
	switch {
	case !ok:
		return nil
	case idx == 0:
		return n.defaultLane
	}
	return n.laneAt[idx]
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
	if l == nil || l == n.defaultLane || !l.m.Idle() || simfault.On("lane-never-ends") {
		return
	}
	n.retired.Add(l.m.Stats())
	delete(n.lanes, l.identity)
	delete(n.laneAt, l.idx)
	n.out.EndLane(port.LaneEnd{Lane: l.m.Lane()})
}

// dropIdleLanes drops every lane that holds nothing.
func (n *Node) dropIdleLanes() {
	for _, l := range n.sortedLanes()[1:] {
		n.dropIdleLane(l)
	}
}

// ErrLaneTokenRefused ends the client streams of a lane whose token etcd
// refused when the lane's watches were created again (after a broken
// upstream stream or a failover: the token expired, the member lost it in a
// restart, or auth changed since it was issued). Unavailable makes clientv3
// open its stream again, with a fresh token, and resume its watches from
// where they stood, as it does when a member it watches on goes away.
var ErrLaneTokenRefused = status.Error(codes.Unavailable, "etcdproxy: etcd refused the stream's auth token when its watches were created again; reconnect with a fresh token")

// tokenRefused reports whether etcd refused an upstream create for the
// token the stream carries rather than for the range: the lane's token
// is no longer good for anything.
func tokenRefused(r *pb.WatchResponse) bool {
	if !r.Canceled {
		return false
	}
	switch r.CancelReason {
	case rpctypes.ErrGRPCInvalidAuthToken.Error(), rpctypes.ErrGRPCAuthOldRevision.Error(), rpctypes.ErrGRPCUserEmpty.Error():
		return true
	}
	return false
}

// endLane ends every client stream of lane l with ErrLaneTokenRefused and
// drops the lane.
func (n *Node) endLane(l *lane) {
	var ids []port.StreamID
	for id, sl := range n.streamLane {
		if sl == l {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		delete(n.streamLane, id)
		delete(n.leader, id)
		l.m.CloseStream(id)
		n.out.End(port.End{Stream: id, Err: ErrLaneTokenRefused})
	}
	n.dropIdleLane(l)
}
