package node

import (
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/failover"
	"github.com/etcdproxy/etcdproxy/core/lease"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/simfault"
	"github.com/etcdproxy/etcdproxy/core/watch"
)

// Config sets the node's bounds: the flow control and fetch retries it
// owns, and each machine's.
type Config struct {
	Port     port.Config
	Watch    watch.Config
	Failover failover.Config
	Lease    lease.Config
	// Cache enables the read cache (Cache.MaxBytes > 0).
	Cache cache.Config
	// Members are the etcd endpoints the proxy starts with; the failover
	// machine starts on the first. With none, no member is probed or
	// chosen (a node fed by a simulation that plays etcd itself).
	Members []string
	// LeaderlessStreamEnd is how long the member in use may report no
	// leader before client streams that asked for a leader
	// (require-leader) end with etcd's "no leader" error, as etcd ends
	// them after three election timeouts (default 3 s: etcd's default 1 s
	// election timeout). The failover machine normally moves to a member
	// with a leader well before.
	LeaderlessStreamEnd time.Duration
}

// DefaultLeaderlessStreamEnd is LeaderlessStreamEnd unless configured.
const DefaultLeaderlessStreamEnd = 3 * time.Second

// Node is the composite state machine. It is not safe for concurrent use:
// one loop owns it.
type Node struct {
	cfg      Config
	out      *port.Outbox
	watch    *watch.Machine
	lease    *lease.Machine
	failover *failover.Machine
	now      time.Time
	// leader holds the client streams that asked for a leader.
	leader map[port.StreamID]bool
	// lanes: one watch machine per auth identity (see lanes.go); the
	// default lane's machine is watch.
	defaultLane *lane
	lanes       map[string]*lane // by identity
	laneAt      map[int]*lane    // by index
	streamLane  map[port.StreamID]*lane
	nextLane    int
	retired     watch.Stats // counters of lanes dropped
	// cache is the read cache (nil: disabled), fed by its subscription.
	cache            *cache.Cache
	cacheSubscribed  bool
	cacheResubscribe bool
	cacheRetryAt     time.Time // a cancelled subscription waits until then
	// progress requests on the subscription, asked and answered (they are
	// answered in order); after a break the cache serves again only once
	// the answer to the request asked then (cacheWanted) has come.
	cacheAsked, cacheAnswered, cacheWanted int
	cacheAskedAt                           time.Time
	worth                                  cacheWorth
}

// New returns a node with cfg's bounds; now is the clock's reading.
func New(cfg Config, now time.Time) *Node {
	if cfg.LeaderlessStreamEnd <= 0 {
		cfg.LeaderlessStreamEnd = DefaultLeaderlessStreamEnd
	}
	out := port.NewOutbox(cfg.Port, now)
	n := &Node{
		cfg: cfg, out: out, now: now, leader: map[port.StreamID]bool{},
		watch:    watch.New(cfg.Watch, out, now),
		lease:    lease.New(cfg.Lease, out, now),
		failover: failover.New(cfg.Failover, out, cfg.Members, now),
	}
	n.defaultLane = &lane{m: n.watch}
	n.lanes, n.laneAt, n.streamLane = map[string]*lane{}, map[int]*lane{}, map[port.StreamID]*lane{}
	n.startCache()
	return n
}

// Step feeds one input.
func (n *Node) Step(in Input) {
	switch in := in.(type) {
	case Tick:
		n.now = in.Now
		n.out.Tick(in.Now)
		n.failover.Tick(in.Now)
		for _, l := range n.sortedLanes() {
			l.m.Tick(in.Now)
		}
		n.lease.Tick(in.Now)
		n.cacheTick()
		n.endLeaderless()
	case OpenStream:
		if in.Lease {
			n.lease.OpenStream(in.Stream, n.out.OpenStream(in.Stream))
			return
		}
		if in.RequireLeader {
			if _, ok := n.failover.Leaderless(); ok {
				// etcd refuses such a stream while it has no leader.
				n.out.End(port.End{Stream: in.Stream, Err: rpctypes.ErrGRPCNoLeader})
				return
			}
			n.leader[in.Stream] = true
		}
		l := n.laneFor(in.Identity, in.Token)
		n.streamLane[in.Stream] = l
		if l != n.defaultLane {
			l.tokens[in.Stream] = in.Token
		}
		l.m.OpenStream(in.Stream, in.Token, n.out.OpenStream(in.Stream))
	case CloseStream:
		delete(n.leader, in.Stream)
		n.lease.CloseStream(in.Stream)
		l := n.streamLane[in.Stream]
		delete(n.streamLane, in.Stream)
		if l != nil {
			delete(l.tokens, in.Stream)
			l.m.CloseStream(in.Stream)
		}
		n.out.CloseStream(in.Stream)
		n.dropIdleLane(l)
	case WatchCreate:
		n.watchOf(in.Stream).Create(in.Stream, in.Req)
	case WatchCancel:
		n.watchOf(in.Stream).Cancel(in.Stream, in.WatchID)
	case WatchProgress:
		n.watchOf(in.Stream).RequestProgress(in.Stream)
	case Written:
		if n.out.Written(in.Stream, in.Bytes) {
			if n.lease.Has(in.Stream) {
				n.lease.Resume(in.Stream)
			} else {
				n.watchOf(in.Stream).Resume(in.Stream)
			}
		}
	case KeepAlive:
		n.lease.KeepAlive(in.Stream, in.ID)
	case LeaseRevoked:
		n.lease.Revoked(in.ID)
	case LeaseChecked:
		n.lease.Checked(in.ID, in.Result)
	case LeasesListed:
		n.lease.Listed(in.IDs)
	case UpstreamResponse:
		switch {
		case in.Watch != nil:
			l := n.laneOfUpstream(in.Upstream)
			switch {
			case l == nil:
			case l != n.defaultLane && tokenRefused(in.Watch):
				n.laneTokenRefused(l, in.Upstream)
			default:
				l.m.UpstreamResponse(in.Upstream, in.Watch)
			}
		case in.Lease != nil:
			n.lease.UpstreamResponse(in.Lease)
		}
	case UpstreamLost:
		if in.Upstream == port.LeaseKeepAlive {
			n.lease.UpstreamLost()
		} else if l := n.laneOfUpstream(in.Upstream); l != nil && !(l != n.defaultLane && simfault.On("lane-loss-ignored")) {
			if in.Token == l.token {
				// Open again with the lane's token: what comes now is
				// about that token.
				delete(l.retiring, in.Upstream)
			}
			l.m.UpstreamLost(in.Upstream)
			if l == n.defaultLane {
				n.cacheStreamLost()
			}
		}
	case Fetched:
		For, ok := n.out.Fetched(in.ID, in.Result)
		if ok && For.Has(port.Watch) {
			// Each lane's machine takes the answers to its own fetches.
			for _, l := range n.sortedLanes() {
				l.m.Fetched(in.ID, in.Result)
			}
			n.dropIdleLanes()
		}
		if ok && For.Has(port.Cache) {
			n.cacheFetched(in.ID, in.Result)
		}
	case CacheRead:
		n.cacheRead(in.Read)
	case CacheFill:
		if n.cache != nil {
			n.cache.Fill(in.Key, in.Start, in.End, in.Resp)
		}
	case Probed:
		n.failover.Probed(in.Member, in.Seq, in.Result)
	case Suspect:
		n.failover.Suspect()
	case SetMembers:
		n.failover.SetMembers(in.Endpoints)
	}
	n.cacheAfterStep()
}

// endLeaderless ends the streams that asked for a leader once the member in
// use has reported none for LeaderlessStreamEnd (the failover machine found
// no member with a leader to move to).
func (n *Node) endLeaderless() {
	since, ok := n.failover.Leaderless()
	if !ok || n.now.Sub(since) < n.cfg.LeaderlessStreamEnd || len(n.leader) == 0 {
		return
	}
	ids := make([]port.StreamID, 0, len(n.leader))
	for id := range n.leader {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		delete(n.leader, id)
		n.watchOf(id).CloseStream(id)
		n.out.End(port.End{Stream: id, Err: rpctypes.ErrGRPCNoLeader})
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

// Stats are the node's counters. Client counts leave out the read cache's
// subscription (an internal stream and watcher); upstream counts include
// its watch.
type Stats struct {
	Watch    watch.Stats
	Lease    lease.Stats
	Failover failover.Stats
	Cache    cache.Stats // zero when the cache is disabled
	Holds    int64       // times a client stream went over its bound
	// CachePauses counts the cache's subscriptions closed for costing
	// etcd more events than the cache saved it reads (cacheworth.go).
	CachePauses int64
	// TotalHolds counts the holds, among Holds, made because all streams
	// together were over the proxy-wide bound.
	TotalHolds int64
}

// Gauges are the node's current state.
type Gauges struct {
	Watch watch.Gauges
	Lease lease.Gauges
	Flow  port.FlowStats
}

// Stats returns the counters; it is cheap.
func (n *Node) Stats() Stats {
	st := Stats{Watch: n.retired, Lease: n.lease.Stats(), Failover: n.failover.Stats(), Holds: n.out.Holds(), TotalHolds: n.out.TotalHolds()}
	for _, l := range n.sortedLanes() {
		st.Watch.Add(l.m.Stats())
	}
	if n.cache != nil {
		st.Cache = n.cache.Stats()
		st.CachePauses = n.worth.closes
	}
	if n.cacheSubscribed {
		st.Watch.Watchers-- // the cache's subscription is no client's
	}
	return st
}

// Member returns the etcd member in use.
func (n *Node) Member() string { return n.failover.Member() }

// Holds counts the times a client stream was held for going over its
// bound (cheap: Stats walks every lane).
func (n *Node) Holds() int64 { return n.out.Holds() }

// LeaseVerdicts reports what the lease machine knows of each lease's
// ownership under a namespace. It changes nothing.
func (n *Node) LeaseVerdicts(ids []int64) []lease.Verdict { return n.lease.Verdicts(ids) }

// Gauges counts the node's current state; it walks every stream and group,
// so it is meant for a metrics scrape, not for every step.
func (n *Node) Gauges() Gauges {
	g := Gauges{Lease: n.lease.Gauges(), Flow: n.out.Stats()}
	for _, l := range n.sortedLanes() {
		g.Watch.Add(l.m.Gauges())
	}
	if n.cacheSubscribed {
		// The cache's subscription is no client's stream; its upstream
		// watch and group count, as etcd sees them.
		g.Watch.Streams--
		g.Flow.Streams--
	}
	return g
}

// InspectWatcher tells where a client watcher stands, for tests and the
// simulation; it changes nothing.
func (n *Node) InspectWatcher(id port.StreamID, watchID int64) (watch.WatcherInfo, bool) {
	return n.watchOf(id).Inspect(id, watchID)
}
