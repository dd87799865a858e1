package shell

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// tickInterval is how often the node hears the time.
const tickInterval = 50 * time.Millisecond

// maxStepOutputs is how many outputs a step gathers before the loop
// carries them out instead of taking more inputs.
const maxStepOutputs = 16 << 10

// fetchTimeout bounds one revision fetch; a fetch that runs out is
// reported as a transport error, and the node tries it again.
const fetchTimeout = 5 * time.Second

// loop is the one event loop that owns the core's node: every input reaches
// the node through it, as data on one channel, in order, and it carries out
// what the node hands out. Client streams, upstream streams and revision
// fetches run on goroutines of their own and talk to the loop only through
// inputs. Every timer (the tick, fetch timeouts, reconnect backoff) comes
// from the injected clock.
type loop struct {
	lg      *zap.Logger
	clock   clock.Clock
	kv      pb.KVClient
	members *members // nil: no failover (tests of the loop alone)
	// holdsLogged and holdsLoggedAt: the node's holds at the last line
	// about held streams, and when (the loop's goroutine only).
	holdsLogged   int64
	holdsLoggedAt time.Time

	inputs  chan node.Input
	queries chan chan snapshot
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	nextStream atomic.Uint64
	mu         sync.Mutex // guards clients
	clients    map[port.StreamID]*clientQueue

	// ups are the upstream streams: the default lane's and the keep-alive
	// stream from the start, other lanes' as the node starts them (see
	// startLane). upsMu guards the map (the loop changes it; close reads
	// it).
	wc    pb.WatchClient
	upsMu sync.Mutex
	ups   map[port.UpstreamID]*upstreamStream

	// leaseCheck runs a lease ownership check (under a namespace; set
	// before serving), at most maxLeaseChecks at once.
	leaseCheck  func(context.Context, int64) port.LeaseCheckResult
	leaseChecks chan struct{}

	// leaseWrittenEvery: a keep-alive stream reports its written bytes
	// once they add up to this (see serveStream).
	leaseWrittenEvery int

	// calls are functions run on the loop's goroutine with the node, for
	// reads of its state (see do).
	calls chan func(*node.Node)

	// cache takes the read cache's answers (nil: no cache).
	cache *readCache
	// ids names the auth identity of a watch stream's token (its lane).
	ids *identities

	// batches gathers, by stream, the sends of one Ready (loop goroutine
	// only): each stream's queue takes its slice whole.
	batches    map[port.StreamID][]outMsg
	sendCounts map[port.StreamID]int // sends per stream in the Ready being executed
}

// snapshot is the node's counters and gauges at one moment.
type snapshot struct {
	Stats  node.Stats
	Gauges node.Gauges
}

func newLoop(lg *zap.Logger, clk clock.Clock, cfg node.Config, kv pb.KVClient, wc pb.WatchClient, lc pb.LeaseClient, ms *members) *loop {
	l := &loop{
		lg: lg, clock: clk, kv: kv, members: ms,
		inputs: make(chan node.Input, 1024), queries: make(chan chan snapshot), calls: make(chan func(*node.Node)),
		leaseChecks: make(chan struct{}, maxLeaseChecks),
		clients:     map[port.StreamID]*clientQueue{}, batches: map[port.StreamID][]outMsg{}, sendCounts: map[port.StreamID]int{},
		wc: wc, ups: map[port.UpstreamID]*upstreamStream{}, ids: newIdentities(),
	}
	bound := cfg.Port.StreamBufferBytes
	if bound <= 0 {
		bound = port.DefaultConfig().StreamBufferBytes
	}
	l.leaseWrittenEvery = min(16<<10, bound/4)
	if cfg.Cache.MaxBytes > 0 {
		l.cache = newReadCache(l)
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	n := node.New(cfg, clk.Now())
	l.startLane(port.LaneStart{Lane: port.DefaultLane})
	l.startUpstream(newUpstreamStream(l, port.LeaseKeepAlive, leaseOpener(lc)))
	l.wg.Add(1)
	go l.run(n)
	return l
}

// startUpstream runs u.
func (l *loop) startUpstream(u *upstreamStream) {
	l.upsMu.Lock()
	l.ups[u.id] = u
	l.upsMu.Unlock()
	l.wg.Add(1)
	go u.run()
}

// startLane opens a lane's two upstream Watch streams, with its token, or
// opens them again with another (s.Restart).
func (l *loop) startLane(s port.LaneStart) {
	for _, id := range []port.UpstreamID{s.Lane.Shared, s.Lane.CatchUp} {
		if u := l.upstream(id); u != nil && s.Restart {
			u.retoken(watchOpener(l.wc, id, s.Token), s.Token)
			continue
		}
		u := newUpstreamStream(l, id, watchOpener(l.wc, id, s.Token))
		u.token = s.Token
		l.startUpstream(u)
	}
}

// endLane closes a lane's upstream streams.
func (l *loop) endLane(e port.LaneEnd) {
	l.upsMu.Lock()
	defer l.upsMu.Unlock()
	for _, id := range []port.UpstreamID{e.Lane.Shared, e.Lane.CatchUp} {
		if u := l.ups[id]; u != nil {
			u.end()
			delete(l.ups, id)
		}
	}
}

// upstream returns upstream stream id (nil once its lane has ended).
func (l *loop) upstream(id port.UpstreamID) *upstreamStream {
	l.upsMu.Lock()
	defer l.upsMu.Unlock()
	return l.ups[id]
}

// allUpstreams returns every upstream stream open now.
func (l *loop) allUpstreams() []*upstreamStream {
	l.upsMu.Lock()
	defer l.upsMu.Unlock()
	us := make([]*upstreamStream, 0, len(l.ups))
	for _, u := range l.ups {
		us = append(us, u)
	}
	return us
}

// newStreamID names a new client stream.
func (l *loop) newStreamID() port.StreamID { return port.StreamID(l.nextStream.Add(1)) }

// input hands an input to the loop; it gives up when the loop has stopped.
func (l *loop) input(in node.Input) {
	select {
	case l.inputs <- in:
	case <-l.ctx.Done():
	}
}

func (l *loop) run(n *node.Node) {
	defer l.wg.Done()
	t := l.clock.Ticker(tickInterval)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case in := <-l.inputs:
			l.step(n, in)
			// Take what else is already waiting before acting, so that
			// creates arriving together share one revision fetch; but act
			// once a step holds maxStepOutputs, so that a burst of events
			// for many watchers goes out in pieces, not in one Ready of
			// millions of responses.
			for more := true; more && n.Pending() < maxStepOutputs; {
				select {
				case in := <-l.inputs:
					l.step(n, in)
				default:
					more = false
				}
			}
		case now := <-t.C:
			n.Tick(now)
			l.logHolds(n, now)
		case q := <-l.queries:
			q <- snapshot{n.Stats(), n.Gauges()}
		case f := <-l.calls:
			f(n)
		}
		if n.HasReady() {
			l.execute(n.Ready())
			n.Advance()
		}
	}
}

// holdLogEvery spaces the lines about held client streams.
const holdLogEvery = 30 * time.Second

// logHolds writes a line when client watch streams were held for reading
// too slowly since the last one, at most one per holdLogEvery: how many
// holds, and how many streams are held now.
func (l *loop) logHolds(n *node.Node, now time.Time) {
	h := n.Holds()
	if h == l.holdsLogged || (!l.holdsLoggedAt.IsZero() && now.Sub(l.holdsLoggedAt) < holdLogEvery) {
		return
	}
	l.lg.Warn("client watch streams held for reading too slowly; their watchers catch up when they drain",
		zap.Int64("holds-since-last-line", h-l.holdsLogged), zap.Int("held-now", n.Gauges().Flow.HeldStreams))
	l.holdsLogged, l.holdsLoggedAt = h, now
}

// step feeds one input. A lost upstream stream is where the loop keeps an
// ordering promise: whatever the node asked of the broken stream and is
// still queued is dropped here, before the node hears of the loss and asks
// for every watch again, so no stale request reaches the new stream (its
// sender waits for this; see upstreamStream.run).
func (l *loop) step(n *node.Node, in node.Input) {
	if lost, ok := in.(node.UpstreamLost); ok {
		if u := l.upstream(lost.Upstream); u != nil {
			u.void()
		}
	}
	n.Step(in)
}

// execute carries out a Ready: responses to client queues (one push per
// stream), requests to upstream streams, and revision fetches.
func (l *loop) execute(rd port.Ready) {
	if len(rd.Sends) > 0 {
		// Each stream's slice is made at its final size: a Ready of a
		// revision on a key with many watchers brings hundreds of sends per
		// stream, and growing the slices by append was 7% of the proxy's CPU
		// in a fan-out burst.
		for _, s := range rd.Sends {
			l.sendCounts[s.Stream]++
		}
		var shared map[*port.SharedEvents]*sharedEncoding
		for _, s := range rd.Sends {
			m := outMsg{resp: s.Watch, lease: s.Lease, id: s.WatchID, header: s.Header, size: s.Size}
			if s.Shared != nil {
				if shared == nil {
					shared = map[*port.SharedEvents]*sharedEncoding{}
				}
				e := shared[s.Shared]
				if e == nil {
					e = &sharedEncoding{events: s.Shared.Events}
					shared[s.Shared] = e
				}
				m.shared = e
			}
			b := l.batches[s.Stream]
			if b == nil {
				b = make([]outMsg, 0, l.sendCounts[s.Stream])
			}
			l.batches[s.Stream] = append(b, m)
		}
		clear(l.sendCounts)
		l.mu.Lock()
		for id, ms := range l.batches {
			if q := l.clients[id]; q != nil {
				q.push(ms) // the queue owns the slice now
			}
			delete(l.batches, id)
		}
		l.mu.Unlock()
	}
	for _, s := range rd.Lanes {
		l.startLane(s)
	}
	for _, u := range rd.Upstream {
		if up := l.upstream(u.Upstream); up != nil {
			up.push(u)
		}
	}
	for _, e := range rd.LaneEnds {
		l.endLane(e)
	}
	for _, f := range rd.Fetches {
		go l.fetch(f)
	}
	for _, p := range rd.Probes {
		go l.probe(p)
	}
	for _, c := range rd.LeaseChecks {
		go l.checkLease(c)
	}
	if len(rd.Answers) > 0 && l.cache != nil {
		l.cache.answer(rd.Answers)
	}
	for _, sw := range rd.Switches {
		l.switchMember(sw)
	}
	if len(rd.Ends) > 0 {
		l.mu.Lock()
		for _, e := range rd.Ends {
			if q := l.clients[e.Stream]; q != nil {
				q.finish(e.Err)
			}
		}
		l.mu.Unlock()
	}
}

// probe runs a member probe and hands its answer to the node.
func (l *loop) probe(p port.Probe) {
	if l.members == nil {
		return
	}
	ctx, cancel := l.clock.WithTimeout(l.ctx, l.members.timeout)
	defer cancel()
	r := l.members.probe(ctx, p.Member)
	if l.ctx.Err() == nil {
		l.input(node.Probed{Member: p.Member, Seq: p.Seq, Result: r})
	}
}

// maxLeaseChecks bounds the lease ownership checks running at once.
const maxLeaseChecks = 32

// checkLease runs a lease ownership check and hands its answer to the
// node; one that runs out of time is answered with the error, and the
// node asks again.
func (l *loop) checkLease(c port.LeaseCheck) {
	select {
	case l.leaseChecks <- struct{}{}:
		defer func() { <-l.leaseChecks }()
	case <-l.ctx.Done():
		return
	}
	ctx, cancel := l.clock.WithTimeout(l.ctx, fetchTimeout)
	defer cancel()
	var r port.LeaseCheckResult
	if l.leaseCheck == nil {
		r.Err = errNoLeaseCheck
	} else {
		r = l.leaseCheck(ctx, c.ID)
	}
	if l.ctx.Err() == nil {
		l.input(node.LeaseChecked{ID: c.ID, Result: r})
	}
}

var errNoLeaseCheck = errors.New("no lease check configured")

// do runs f with the node on the loop's goroutine and waits for it; f
// must only read. It reports false once the loop has stopped.
func (l *loop) do(f func(*node.Node)) bool {
	done := make(chan struct{})
	select {
	case l.calls <- func(n *node.Node) { f(n); close(done) }:
		<-done
		return true
	case <-l.ctx.Done():
		return false
	}
}

// switchMember moves the proxy to another member. The upstream streams are
// reopened there at once (gRPC ends them when it closes the connection to
// the member left, but a stream must not wait for that).
func (l *loop) switchMember(sw port.Switch) {
	if l.members == nil {
		return
	}
	l.members.use(sw)
	if sw.From == "" {
		return
	}
	for _, u := range l.allUpstreams() {
		u.restart()
	}
}

// snapshot asks the loop for the node's counters and gauges; once the loop
// has stopped it returns zeros.
func (l *loop) snapshot() snapshot {
	q := make(chan snapshot, 1)
	select {
	case l.queries <- q:
		return <-q
	case <-l.ctx.Done():
		return snapshot{}
	}
}

func (l *loop) close() {
	l.cancel()
	for _, u := range l.allUpstreams() {
		u.wakeUp()
	}
	l.wg.Wait()
}
