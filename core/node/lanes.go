package node

import (
	"maps"
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
// first stream (and again with another stream's, when etcd refuses that
// one: laneTokenRefused), so that etcd applies one identity's permissions
// to what the lane watches. Streams without a token (identity "") are the default
// lane, n.watch, which also serves the read cache's subscription. A lane
// other than the default is made for its first stream and dropped once its
// last stream has closed and its machine holds nothing.
type lane struct {
	idx      int
	identity string
	m        *watch.Machine
	// token is the one the lane's upstream streams carry; tokens, the one
	// each of its client streams carries. retiring holds the lane's
	// upstream streams being replaced for a new token, until the shell
	// reports one open again with it: etcd's refusals of an old token are
	// not the new token's.
	token    string
	tokens   map[port.StreamID]string
	retiring map[port.UpstreamID]bool
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
	l := &lane{idx: n.nextLane, identity: identity, m: watch.New(cfg, n.out, n.now), token: token,
		tokens: map[port.StreamID]string{}, retiring: map[port.UpstreamID]bool{}}
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

// ErrLaneTokenRefused ends the client streams whose token etcd refused
// when their lane's watches were created again (after a broken upstream
// stream or a failover: the token expired, the member lost it in a
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

// laneTokenRefused handles etcd refusing the token of lane l's upstream
// stream u. The client streams carrying that token end with
// ErrLaneTokenRefused (their clients come back with a fresh one); if other
// streams of the identity remain, the lane goes on under one of their
// tokens: the shell opens its upstream streams again with it, and the
// watches are created again there from where they stood, so that no group
// stops for one client's token while others of the identity remain.
func (n *Node) laneTokenRefused(l *lane, u port.UpstreamID) {
	if l.retiring[u] && !simfault.On("lane-old-token-blamed") {
		return // about the token the stream is being replaced for
	}
	bad := l.token
	var ended []port.StreamID
	for id, tok := range l.tokens {
		if tok == bad || simfault.On("lane-ends-whole") {
			ended = append(ended, id)
		}
	}
	slices.Sort(ended)
	for _, id := range ended {
		delete(n.streamLane, id)
		delete(n.leader, id)
		delete(l.tokens, id)
		l.m.CloseStream(id)
		n.out.End(port.End{Stream: id, Err: ErrLaneTokenRefused})
	}
	if len(l.tokens) == 0 {
		n.dropIdleLane(l)
		return
	}
	ids := slices.Sorted(maps.Keys(l.tokens))
	l.token = l.tokens[ids[0]]
	lane := l.m.Lane()
	l.retiring[lane.Shared], l.retiring[lane.CatchUp] = true, true
	n.out.StartLane(port.LaneStart{Lane: lane, Token: l.token, Restart: true})
}
