package sim

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// World is one simulated proxy: the core's composite node, a model etcd
// store, the two upstream watch streams, the revision fetches in flight,
// client streams, and a mock clock; and etcd's leases, the upstream
// keep-alive stream and client keep-alive streams (leases.go). Every step
// is a method; the checks run as responses reach clients, and Violations
// collects what went wrong.
type World struct {
	N     *node.Node
	Store *Store
	// Up are etcd's ends of the proxy's upstream Watch streams: the
	// default lane's two from the start, other lanes' as the node starts
	// them (and gone when it ends them).
	Up      map[port.UpstreamID]*Upstream
	Clock   *Clock
	Cfg     node.Config
	Clients map[port.StreamID]*Client
	fetches []port.Fetch
	// served holds the answers etcd has computed (at the revision of that
	// moment) and not yet delivered to the proxy.
	served []node.Fetched
	nextID port.StreamID
	// Members are the etcd members (when cfg.Members names them): the
	// node probes them and chooses one; the upstream streams and fetches
	// are served by the one in use.
	Members  []*Member
	inUse    *Member
	moves    int // switches of member after the first choice
	probes   []port.Probe
	lastTick time.Duration // the clock's last step

	Violations []string
	// Coverage counts the rare situations this world reached.
	Coverage Coverage
	// Trace, if set, hears every response a client reads and every
	// upstream request, for debugging a failing schedule.
	Trace func(format string, args ...any)
	// Recording, when set, keeps every input fed to the node and every
	// output it handed out, so that a replay can be compared with the run.
	Recording *Recording

	leaseWorld
	cacheWorld
	authWorld
	laneToken map[int]string // the token each lane's upstream streams carry
}

// Recording is what a world fed its node and what the node handed out.
type Recording struct {
	Inputs  []node.Input
	Outputs bytes.Buffer
}

// Replay feeds the recorded inputs to a new node with cfg and reports
// whether it hands out exactly the recorded outputs, byte for byte.
func (r *Recording) Replay(cfg node.Config, start time.Time) (bool, string) {
	n := node.New(cfg, start)
	var out bytes.Buffer
	for _, in := range r.Inputs {
		n.Step(in)
		if n.HasReady() {
			writeReady(&out, n.Ready())
			n.Advance()
		}
	}
	if out.String() == r.Outputs.String() {
		return true, ""
	}
	a, b := strings.Split(r.Outputs.String(), "\n"), strings.Split(out.String(), "\n")
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return false, fmt.Sprintf("output line %d: run %q, replay %q", i, a[i], b[i])
		}
	}
	return false, fmt.Sprintf("run %d output lines, replay %d", len(a), len(b))
}

// writeReady writes a Ready byte for byte.
func writeReady(b *bytes.Buffer, rd port.Ready) {
	mo := proto.MarshalOptions{Deterministic: true}
	for _, s := range rd.Sends {
		if s.Lease != nil {
			bs, _ := mo.Marshal(s.Lease)
			fmt.Fprintf(b, "send %d %d lease %x\n", s.Stream, s.Size, bs)
			continue
		}
		bs, _ := mo.Marshal(s.Response())
		fmt.Fprintf(b, "send %d %d %t %x\n", s.Stream, s.Size, s.Shared != nil, bs)
	}
	for _, u := range rd.Upstream {
		if u.Lease != nil {
			bs, _ := mo.Marshal(u.Lease)
			fmt.Fprintf(b, "up %v lease %x\n", u.Upstream, bs)
			continue
		}
		bs, _ := mo.Marshal(u.Watch)
		fmt.Fprintf(b, "up %v %x\n", u.Upstream, bs)
	}
	for _, f := range rd.Fetches {
		fmt.Fprintf(b, "%v\n", f)
	}
	for _, p := range rd.Probes {
		fmt.Fprintf(b, "%v\n", p)
	}
	for _, s := range rd.Switches {
		fmt.Fprintf(b, "%v\n", s)
	}
	for _, e := range rd.Ends {
		fmt.Fprintf(b, "%v\n", e)
	}
	for _, c := range rd.LeaseChecks {
		fmt.Fprintf(b, "%v\n", c)
	}
	for _, a := range rd.Answers {
		fmt.Fprintf(b, "%v\n", a)
	}
	for _, l := range rd.Lanes {
		fmt.Fprintf(b, "%v %q\n", l, l.Token)
	}
	for _, l := range rd.LaneEnds {
		fmt.Fprintf(b, "%v\n", l)
	}
}

// Coverage counts situations that are rare under random schedules and
// where a fault would hide, so that a run can prove it reached them.
type Coverage struct {
	// TotalHolds: a stream held because all streams together were over
	// the proxy-wide bound, not over its own.
	TotalHolds int
	// CancelHeldCatchUp: a cancel while the watcher was on a catch-up watch
	// and its stream was held.
	CancelHeldCatchUp int
	// LostDuringRewind: the shared upstream stream lost while a group's
	// upstream watch was rewound. LostAfterRewind: lost once a rewound
	// upstream watch had passed where the window began but not its head.
	LostDuringRewind, LostAfterRewind int
	// CompactionBoundary: a group's upstream watch compacted at exactly the
	// revision one of its watchers needs next (which must survive it).
	CompactionBoundary int
	// CreatedOvertook: a created response taken before a progress answer
	// to a request made before it (etcd's two queues).
	CreatedOvertook int
	// ProgressNotified: per-watch progress notifications read by clients.
	ProgressNotified int
	// CancelEnded: a cancel of a watch that etcd had ended, confirmed.
	CancelEnded int
	// CancelBeforeCreated: a cancel of a watch whose create was not yet
	// answered.
	CancelBeforeCreated int
	// Fragments: responses read as fragments.
	Fragments int
	// Replayed: schedules whose recorded inputs were replayed into a new
	// node and gave the same outputs.
	Replayed int
	// MovedSilent, MovedBehind, MovedNoLeader: the node left the member in
	// use for that reason.
	MovedSilent, MovedBehind, MovedNoLeader int
	// LeaderlessEnded: client streams that asked for a leader, ended (or
	// refused) with etcd's "no leader".
	LeaderlessEnded int
	// LeaseHeldAnswered: keep-alive answers owed to a held stream, given
	// as it resumed. LeaseResent: refreshes sent again after the
	// keep-alive stream was lost. LeasePiggybacked: refreshes of leases
	// fallen due sent along with another lease's. LeaseRevokedInFlight: revokes through
	// the proxy while a refresh of the lease was in flight. LeaseLocal:
	// keep-alives answered without asking etcd. LeaseExpiryJudged: lease
	// expiries judged by check (d): a client had asked for the lease and
	// etcd was reachable since.
	LeaseHeldAnswered, LeaseResent, LeasePiggybacked, LeaseRevokedInFlight, LeaseLocal, LeaseExpiryJudged int
	// CacheHits: reads answered from the read cache; CacheConsistentHits:
	// linearizable ones; CacheInvalidations: entries dropped by an event.
	CacheHits, CacheConsistentHits, CacheInvalidations int
	// CacheReadRewinding: reads made while the cache's subscription's
	// group was rewound behind it.
	CacheReadRewinding int
	// Lanes: lanes of upstream streams started for streams with a token.
	// AuthRefused: creates refused for their token. AuthEnded: streams
	// ended because etcd refused their token. AuthCancelled: created
	// watches ended for auth (their re-creation refused). LaneReopened:
	// lanes that went on under another token of their user.
	Lanes, AuthRefused, AuthEnded, AuthCancelled, LaneReopened int
}

// Add adds o's counts to c.
func (c *Coverage) Add(o Coverage) {
	c.TotalHolds += o.TotalHolds
	c.CancelHeldCatchUp += o.CancelHeldCatchUp
	c.LostDuringRewind += o.LostDuringRewind
	c.LostAfterRewind += o.LostAfterRewind
	c.CompactionBoundary += o.CompactionBoundary
	c.CreatedOvertook += o.CreatedOvertook
	c.ProgressNotified += o.ProgressNotified
	c.CancelEnded += o.CancelEnded
	c.CancelBeforeCreated += o.CancelBeforeCreated
	c.Fragments += o.Fragments
	c.Replayed += o.Replayed
	c.MovedSilent += o.MovedSilent
	c.MovedBehind += o.MovedBehind
	c.MovedNoLeader += o.MovedNoLeader
	c.LeaderlessEnded += o.LeaderlessEnded
	c.LeaseHeldAnswered += o.LeaseHeldAnswered
	c.LeaseResent += o.LeaseResent
	c.LeasePiggybacked += o.LeasePiggybacked
	c.LeaseRevokedInFlight += o.LeaseRevokedInFlight
	c.LeaseLocal += o.LeaseLocal
	c.LeaseExpiryJudged += o.LeaseExpiryJudged
	c.CacheHits += o.CacheHits
	c.CacheConsistentHits += o.CacheConsistentHits
	c.CacheInvalidations += o.CacheInvalidations
	c.CacheReadRewinding += o.CacheReadRewinding
	c.Lanes += o.Lanes
	c.AuthRefused += o.AuthRefused
	c.AuthCancelled += o.AuthCancelled
	c.LaneReopened += o.LaneReopened
	c.AuthEnded += o.AuthEnded
}

// Missing names the counts that are still zero.
func (c Coverage) Missing() []string {
	var out []string
	for name, n := range map[string]int{
		"cancel while on a catch-up watch and held":   c.CancelHeldCatchUp,
		"streams held for the proxy-wide bound":       c.TotalHolds,
		"shared upstream lost during a rewind":        c.LostDuringRewind,
		"shared upstream lost after a rewind":         c.LostAfterRewind,
		"compaction at a watcher's next revision":     c.CompactionBoundary,
		"created overtaking an older progress answer": c.CreatedOvertook,
		"progress notifications":                      c.ProgressNotified,
		"cancel of a watch etcd ended":                c.CancelEnded,
		"cancel before created":                       c.CancelBeforeCreated,
		"fragments":                                   c.Fragments,
		"schedules replayed":                          c.Replayed,
		"moves off a silent member":                   c.MovedSilent,
		"moves off a member behind":                   c.MovedBehind,
		"moves off a leaderless member":               c.MovedNoLeader,
		"require-leader streams ended":                c.LeaderlessEnded,
		"keep-alives owed to a held stream answered":  c.LeaseHeldAnswered,
		"refreshes resent after the stream was lost":  c.LeaseResent,
		"refreshes piggybacked on another's":          c.LeasePiggybacked,
		"revokes with a refresh in flight":            c.LeaseRevokedInFlight,
		"keep-alives answered locally":                c.LeaseLocal,
		"lease expiries judged":                       c.LeaseExpiryJudged,
		"reads answered from the cache":               c.CacheHits,
		"linearizable reads answered from the cache":  c.CacheConsistentHits,
		"cache entries invalidated":                   c.CacheInvalidations,
		"reads while the cache's group was rewound":   c.CacheReadRewinding,
		"lanes started for streams with a token":      c.Lanes,
		"creates refused for their token":             c.AuthRefused,
		"streams ended for their token":               c.AuthEnded,
		"created watches ended for auth":              c.AuthCancelled,
		"lanes gone on under another token":           c.LaneReopened,
	} {
		if n == 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// progressMayStay reports whether the progress requests left on the
// stream may stay unanswered: on a stream with a token that etcd has
// refused a read (revoked, expired, or never granted every key), a
// request finds no way to
// its revision when the stream has no watch by then (the proxy asks etcd
// for progress on the upstream streams of the stream's watches; etcd says
// nothing to a stream without watchers either). Answers are matched in
// order, so the requests left are the last ones, whichever went unanswered.
func (w *World) progressMayStay(c *Client) bool {
	return c.Token != "" && (w.changes[c.Token] > 0 || w.authError(c.Token, []byte{0}, nil) != nil)
}

// watching reports whether etcd would find a watcher on the stream at a
// request sent now: a create not answered yet that it would not refuse at
// once, or a created watch that neither etcd nor the client has ended.
// Answers still unread in the inbox count as made: creates are answered
// in order, so the k-th created there answers the k-th pending create.
func (c *Client) watching() bool {
	live := map[int64]bool{}
	for id, cw := range c.watches {
		if !cw.Ended && !cw.CancelSent {
			live[id] = true
		}
	}
	answered := 0
	for _, s := range c.inbox {
		switch r := s.Response(); {
		case r == nil:
		case r.Created:
			cancelled := false
			if answered < len(c.pending) {
				cancelled = c.pending[answered].CancelSent
				answered++
			}
			if !r.Canceled && !cancelled {
				live[r.WatchId] = true
			}
		case r.Canceled:
			delete(live, r.WatchId)
		}
	}
	for _, cw := range c.pending[answered:] {
		if !cw.Refused {
			return true
		}
	}
	return len(live) > 0
}

// idShared reports whether another create not answered yet chose cw's
// watch ID.
func (c *Client) idShared(cw *ClientWatch) bool {
	for _, o := range c.pending {
		if o != cw && o.Req.WatchId == cw.Req.WatchId && (o.dupOf == cw || cw.dupOf == o) {
			return true
		}
	}
	return false
}

// Client is a client watch stream and what it expects.
type Client struct {
	ID      port.StreamID
	Reading bool
	Closed  bool
	// RequireLeader: the stream asked for a leader; Ended is the error the
	// node ended it with.
	RequireLeader bool
	Ended         error
	inbox         []port.Send
	pending       []*ClientWatch // creates waiting for their answer, in order
	watches       map[int64]*ClientWatch
	// progress holds the store revision at each RequestProgress not yet
	// answered; lastProgress is the revision of the last answer.
	progress     []int64
	lastProgress int64
	// chosen maps a client-chosen watch ID to the create that holds it.
	chosen map[int64]*ClientWatch
	// Token is the auth token the stream carries ("" for none).
	Token string
}

// ClientWatch is one create request and what came back for it.
type ClientWatch struct {
	Req      *pb.WatchCreateRequest
	RevAtReq int64 // store revision when the create was sent
	Refused  bool  // etcd would refuse it at once
	// AuthAtReq is etcd's auth verdict on the create's token and range
	// when it was made (nil: allowed), for check (l).
	AuthAtReq  error
	authEpoch  int          // the token's grant changes when it was made
	createdAt  int          // the node's Ready that answered it, for check (o)
	dupOf      *ClientWatch // the pending create holding its chosen ID, if any
	ID         int64
	Created    bool
	CreatedRev int64
	Start      int64 // first revision it must see
	Got        int   // events received so far
	LastRev    int64
	Told       int64 // highest header revision the client has for this watch
	inFragment bool
	CancelSent bool
	Ended      bool
	CancelDone bool // the cancel of a watch that had ended was confirmed
}

// NewWorld returns a world with cfg's bounds, at time zero.
func NewWorld(cfg node.Config) *World {
	w := &World{Store: NewStore(), Clock: &Clock{}, Cfg: cfg, Clients: map[port.StreamID]*Client{}, leaseWorld: newLeaseWorld(), cacheWorld: newCacheWorld(), authWorld: newAuthWorld(), laneToken: map[int]string{}}
	w.Clock.Set(time.Unix(0, 0))
	w.Up = map[port.UpstreamID]*Upstream{}
	for _, u := range []port.UpstreamID{port.WatchShared, port.WatchCatchUp} {
		w.Up[u] = NewUpstream(w.Store)
	}
	for _, name := range cfg.Members {
		w.Members = append(w.Members, &Member{Name: name, since: w.Clock.Now()})
	}
	w.N = node.New(cfg, w.Clock.Now())
	return w
}

func (w *World) violate(format string, args ...any) {
	w.Violations = append(w.Violations, fmt.Sprintf(format, args...))
}

// step feeds the node one input and carries out what it asks for.
func (w *World) step(in node.Input) {
	if w.Recording != nil {
		w.Recording.Inputs = append(w.Recording.Inputs, in)
	}
	w.stepIn = in
	w.N.Step(in)
	w.route()
	w.stepIn = nil
}

// route carries out what the node asks for, as the shell's loop does.
func (w *World) route() {
	if !w.N.HasReady() {
		w.checkBounds()
		return
	}
	r := w.N.Ready()
	w.readies++
	if w.Recording != nil {
		writeReady(&w.Recording.Outputs, r)
	}
	for _, l := range r.Lanes {
		lane, _, _ := l.Lane.Shared.Lane()
		if l.Restart {
			if w.Up[l.Lane.Shared] == nil {
				w.violate("lane %v opened again, but it is not open", l.Lane.Shared)
			}
			if w.users[l.Token] != w.users[w.laneToken[lane]] {
				w.violate("lane %v opened again with a token of another user: %s, was %s", l.Lane.Shared, l.Token, w.laneToken[lane])
			}
			w.laneToken[lane] = l.Token
			w.reopening = append(w.reopening, l)
			w.Coverage.LaneReopened++
			continue
		}
		for _, u := range []port.UpstreamID{l.Lane.Shared, l.Lane.CatchUp} {
			if w.Up[u] != nil {
				w.violate("lane %v started twice", u)
			}
			w.Up[u] = w.laneUpstream(lane, l.Token)
		}
		w.laneToken[lane] = l.Token
		w.laneOfUser[w.users[l.Token]] = lane
		w.Coverage.Lanes++
	}
	// Refreshes first: check (c) judges them by the requests outstanding
	// before this step's answers.
	for _, u := range r.Upstream {
		if u.Upstream == port.LeaseKeepAlive {
			w.keepAliveRequest(u.Lease)
		}
	}
	for _, s := range r.Sends {
		if s.Lease != nil || w.KeepAlives[s.Stream] != nil {
			w.keepAliveAnswer(s)
			continue
		}
		if c := w.Clients[s.Stream]; c != nil && !c.Closed {
			c.inbox = append(c.inbox, s)
			if r := s.Response(); c.Token != "" && r != nil && r.Created && !r.Canceled {
				w.createdAt[r] = w.readies
			}
		}
	}
	for _, u := range r.Upstream {
		if u.Upstream == port.LeaseKeepAlive {
			continue
		}
		if w.Trace != nil {
			w.Trace("%v upstream request: %v", u.Upstream, u.Watch)
		}
		if up := w.Up[u.Upstream]; up != nil {
			up.Request(u.Watch)
		} else {
			w.violate("a request on %v, which no lane started: %v", u.Upstream, u.Watch)
		}
	}
	if w.Trace != nil {
		for _, f := range r.Fetches {
			w.Trace("%v asked", f)
		}
		for _, x := range r.Sends {
			if r := x.Response(); r != nil && r.WatchId == -1 && !r.Created {
				w.Trace("stream %d is sent progress at %d", x.Stream, r.Header.GetRevision())
			}
		}
	}
	for _, e := range r.LaneEnds {
		for _, u := range []port.UpstreamID{e.Lane.Shared, e.Lane.CatchUp} {
			delete(w.Up, u) // etcd closes the streams, and their watches
		}
		lane, _, _ := e.Lane.Shared.Lane()
		for u, l := range w.laneOfUser {
			if l == lane {
				delete(w.laneOfUser, u)
			}
		}
		delete(w.laneToken, lane)
	}
	w.fetches = append(w.fetches, r.Fetches...)
	w.probes = append(w.probes, r.Probes...)
	for _, a := range r.Answers {
		w.cacheAnswer(a)
	}
	for _, e := range r.Ends {
		w.ended(e)
	}
	switches := append([]port.Switch(nil), r.Switches...)
	w.N.Advance() // once it is carried out: Advance lets the node reuse it
	w.checkBounds()
	for _, sw := range switches {
		w.switchTo(sw)
	}
}

// checkBounds: one upstream watch per key range on the shared stream, and
// no more upstream watches of their own than client watchers.
func (w *World) checkBounds() {
	catchUps := 0
	for _, u := range w.UpIDs() {
		if _, kind, _ := u.Lane(); kind == port.WatchShared {
			if _, per := w.Up[u].Open(); per > 1 {
				w.violate("%d shared upstream watches on one key range on %v", per, u)
			}
		} else {
			n, _ := w.Up[u].Open()
			catchUps += n
		}
	}
	live := 0
	for _, c := range w.Clients {
		for _, cw := range c.watches {
			if !cw.Ended {
				live++
			}
		}
		live += len(c.pending)
	}
	if _, ok := w.N.InspectCacheSubscription(); ok {
		live++ // the read cache's subscription is a watcher too
	}
	if catchUps > live {
		w.violate("%d catch-up watches for %d client watchers", catchUps, live)
	}
}

// ---- client steps ----

// Open opens a client stream.
func (w *World) Open() port.StreamID { return w.open(false) }

// OpenRequiringLeader opens a client stream that asks for a leader
// (clientv3.WithRequireLeader).
func (w *World) OpenRequiringLeader() port.StreamID { return w.open(true) }

func (w *World) open(requireLeader bool) port.StreamID { return w.openWith(requireLeader, "") }

// OpenWithToken opens a client stream carrying an auth token: the node
// serves it in the lane of that token (as the shell names it).
func (w *World) OpenWithToken(token string) port.StreamID { return w.openWith(false, token) }

func (w *World) openWith(requireLeader bool, token string) port.StreamID {
	w.nextID++
	id := w.nextID
	w.Clients[id] = &Client{ID: id, Reading: true, RequireLeader: requireLeader, Token: token, watches: map[int64]*ClientWatch{}, chosen: map[int64]*ClientWatch{}}
	open := node.OpenStream{Stream: id, RequireLeader: requireLeader, Token: token}
	if token != "" {
		open.Identity = "user:" + w.users[token]
	}
	w.step(open)
	return id
}

// Create sends a create request on stream id and returns what the client
// keeps of it.
func (w *World) Create(id port.StreamID, req *pb.WatchCreateRequest) *ClientWatch {
	c := w.Clients[id]
	if c == nil || c.Closed {
		return &ClientWatch{Req: req, Refused: true}
	}
	cw := &ClientWatch{Req: req, RevAtReq: w.Store.Rev}
	if c.Token != "" {
		cw.AuthAtReq = w.authError(c.Token, req.Key, req.RangeEnd)
		cw.authEpoch = w.changes[c.Token]
	}
	key, end := req.Key, req.RangeEnd
	if len(key) == 0 {
		key = []byte{0}
	}
	switch {
	case req.StartRevision < 0:
		cw.Refused = true
	case len(end) > 0 && !(len(end) == 1 && end[0] == 0) && bytes.Compare(key, end) >= 0:
		cw.Refused = true
	case req.WatchId != 0:
		// The ID is taken from its holder's create until the client
		// cancels it, even after etcd ended the watch (as etcd keeps it).
		if h := c.chosen[req.WatchId]; h != nil && !h.CancelSent && !h.Refused {
			if c.Token != "" && !h.Created {
				// The holder is not answered yet and etcd may refuse it for
				// its token, freeing the ID: decided when this is answered.
				cw.dupOf = h
			} else {
				cw.Refused = true
			}
		}
	}
	if !cw.Refused && cw.dupOf == nil && req.WatchId != 0 {
		c.chosen[req.WatchId] = cw
	}
	c.pending = append(c.pending, cw)
	w.step(node.WatchCreate{Stream: id, Req: req})
	return cw
}

// Cancel cancels a watch: a live one, one that etcd ended (which frees its
// ID), or one whose create (with an ID the client chose) is not answered
// yet.
func (w *World) Cancel(id port.StreamID, cw *ClientWatch) {
	c := w.Clients[id]
	if c == nil || c.Closed || cw.CancelSent || cw.Refused {
		return
	}
	wid := cw.ID
	if !cw.Created {
		if cw.Req.WatchId == 0 {
			return // the client does not know its ID yet
		}
		wid = cw.Req.WatchId
		w.Coverage.CancelBeforeCreated++
	} else if info, ok := w.N.InspectWatcher(id, wid); ok && info.CatchUp && info.Held {
		w.Coverage.CancelHeldCatchUp++
	}
	cw.CancelSent = true
	w.step(node.WatchCancel{Stream: id, WatchID: wid})
}

// RequestProgress asks for a progress notification on stream id.
func (w *World) RequestProgress(id port.StreamID) {
	c := w.Clients[id]
	if c == nil || c.Closed {
		return
	}
	// The proxy answers every progress request on a stream with watchers
	// (etcd drops some), in order; but see progressMayStay. Like etcd, it
	// says nothing to a stream without any.
	if c.watching() {
		c.progress = append(c.progress, w.Store.Rev)
	}
	if w.Trace != nil {
		w.Trace("stream %d asks for progress at %d (%d answers expected)", id, w.Store.Rev, len(c.progress))
	}
	w.step(node.WatchProgress{Stream: id})
}

// Close closes stream id.
func (w *World) Close(id port.StreamID) {
	c := w.Clients[id]
	if c == nil || c.Closed {
		return
	}
	c.Closed = true
	w.step(node.CloseStream{Stream: id})
}

// Read has stream id take everything waiting for it and tell the machine.
func (w *World) Read(id port.StreamID) {
	c := w.Clients[id]
	if c == nil || c.Closed || !c.Reading {
		return
	}
	n := 0
	for len(c.inbox) > 0 {
		s := c.inbox[0]
		c.inbox = c.inbox[1:]
		n += s.Size
		w.check(c, s.Response())
	}
	if n > 0 {
		w.step(node.Written{Stream: id, Bytes: n})
	}
}

// ---- etcd steps ----

// Write applies a transaction to the store.
func (w *World) Write(ops ...Op) { w.Store.Txn(ops...) }

// Compact compacts the store.
func (w *World) Compact(rev int64) { w.Store.Compact(rev) }

// AnswerFetch answers the i-th pending revision fetch as etcd would now, or
// with a transport error (retry), which makes the node try again later.
func (w *World) AnswerFetch(i int, retry bool) {
	f, ok := takeAt(&w.fetches, i)
	if !ok {
		return
	}
	res := w.serve(f)
	if retry {
		res = port.FetchResult{Err: status.Error(codes.Unavailable, "connection refused")}
	}
	if w.Trace != nil {
		w.Trace("fetch %d answered: %v at store revision %d", f.ID, res, w.Store.Rev)
	}
	w.step(node.Fetched{ID: f.ID, Result: res})
}

// ServeFetch has etcd serve the i-th pending fetch now; the answer reaches
// the proxy later (DeliverFetch), after whatever happens meanwhile.
func (w *World) ServeFetch(i int) {
	if f, ok := takeAt(&w.fetches, i); ok {
		w.served = append(w.served, node.Fetched{ID: f.ID, Result: w.serve(f)})
	}
}

// DeliverFetch hands the i-th served answer to the node.
func (w *World) DeliverFetch(i int) {
	in, ok := takeAt(&w.served, i)
	if !ok {
		return
	}
	if w.Trace != nil {
		w.Trace("fetch %d answered late: %v at store revision %d", in.ID, in.Result, w.Store.Rev)
	}
	w.step(in)
}

// takeAt removes and returns the element at i (modulo the length).
func takeAt[T any](s *[]T, i int) (T, bool) {
	var v T
	if len(*s) == 0 {
		return v, false
	}
	i %= len(*s)
	v = (*s)[i]
	*s = slices.Delete(*s, i, i+1)
	return v, true
}

// serve is etcd's answer to a fetch now. A member in use that is silent,
// behind or without a leader cannot serve a linearizable read: the shell's
// deadline runs out, or etcd answers "no leader"; both are retried.
func (w *World) serve(f port.Fetch) port.FetchResult {
	switch {
	case !w.inUseServes():
		return port.FetchResult{Err: status.Error(codes.DeadlineExceeded, "context deadline exceeded")}
	case f.Revision != 0 && f.Revision < w.Store.Compacted:
		return port.FetchResult{Err: rpctypes.ErrGRPCCompacted}
	case f.Revision > w.Store.Rev:
		return port.FetchResult{Err: rpctypes.ErrGRPCFutureRev}
	case f.Token != "":
		if err := w.authError(f.Token, f.Key, f.End); err != nil {
			return port.FetchResult{Err: err}
		}
	}
	return port.FetchResult{Header: &pb.ResponseHeader{Revision: w.Store.Rev}}
}

// Pending is the number of fetches not answered.
func (w *World) Pending() int { return len(w.fetches) + len(w.served) }

// Pump lets upstream stream u produce responses.
func (w *World) Pump(u port.UpstreamID, maxRevs int, fragment bool) {
	if up := w.Up[u]; up != nil {
		up.Pump(maxRevs, fragment)
	}
}

// Deliver hands up to n responses of upstream u to the node, in an order
// etcd allows: fromCtrl chooses, whenever both of etcd's queues hold
// something, whether the next comes from its control queue.
func (w *World) Deliver(u port.UpstreamID, n int, fromCtrl func() bool) {
	if w.Up[u] == nil {
		return // its lane ended while others were delivered
	}
	before := w.Up[u].Overtaken
	rs := w.Up[u].Take(n, fromCtrl)
	w.Coverage.CreatedOvertook += w.Up[u].Overtaken - before
	for _, r := range rs {
		if u == port.WatchShared && r.CompactRevision != 0 {
			w.noteCompaction(r)
		}
		if u == port.WatchShared {
			w.noteSubscription(r)
		}
		w.step(node.UpstreamResponse{Upstream: u, Watch: r})
	}
}

// noteCompaction counts a group compacted at exactly the revision one of
// its watchers needs next.
func (w *World) noteCompaction(r *pb.WatchResponse) {
	for _, id := range w.clientIDs() {
		for _, wid := range slices.Sorted(maps.Keys(w.Clients[id].watches)) {
			if info, ok := w.N.InspectWatcher(id, wid); ok && info.InGroup && info.GroupUpstream == r.WatchId && info.Next == r.CompactRevision {
				w.Coverage.CompactionBoundary++
			}
		}
	}
}

// Lose breaks upstream stream u, as when the proxy moves to another member.
func (w *World) Lose(u port.UpstreamID) {
	if w.Up[u] == nil {
		return // its lane ended as another stream was lost
	}
	if u == port.WatchShared && w.N.Gauges().Watch.Rewinding > 0 {
		w.Coverage.LostDuringRewind++
	}
	lane, kind, _ := u.Lane()
	w.noteLaneLoss(lane, kind == port.WatchShared)
	w.Up[u].Reset()
	if lane == 0 {
		w.brokeAt = w.Store.Rev // the cache's subscription is in the default lane
	}
	w.step(node.UpstreamLost{Upstream: u, Token: w.Up[u].Token})
}

// ProgressTick is etcd's progress ticker firing on every upstream stream.
func (w *World) ProgressTick() {
	for _, u := range w.UpIDs() {
		w.Up[u].ProgressTick()
	}
}

// UpIDs returns the upstream Watch streams open, in order.
func (w *World) UpIDs() []port.UpstreamID { return slices.Sorted(maps.Keys(w.Up)) }

// Tick advances the clock: etcd expires the leases whose time has come,
// the members answer the probes asked for, and the keep-alive streams send
// the keep-alives due and read.
func (w *World) Tick(d time.Duration) {
	w.lastTick = d
	w.Clock.Add(d)
	w.expireLeases()
	w.step(node.Tick{Now: w.Clock.Now()})
	w.answerProbes()
	w.keepAliveTick()
}

// ---- checks ----

// expected returns the events watch cw must get, in order.
func (w *World) expected(cw *ClientWatch) []*mvccpb.Event {
	key, end := cw.Req.Key, cw.Req.RangeEnd
	if len(key) == 0 {
		key = []byte{0}
	}
	var out []*mvccpb.Event
	for _, ev := range w.Store.Events(key, end, cw.Start, w.Store.Rev) {
		if filtered(cw.Req, ev) {
			continue
		}
		out = append(out, ev)
	}
	return out
}

func filtered(req *pb.WatchCreateRequest, ev *mvccpb.Event) bool {
	for _, f := range req.Filters {
		if (f == pb.WatchCreateRequest_NOPUT && ev.Type == mvccpb.PUT) || (f == pb.WatchCreateRequest_NODELETE && ev.Type == mvccpb.DELETE) {
			return true
		}
	}
	return false
}

func sameEvent(got, want *mvccpb.Event, prevKV bool) bool {
	if got.Type != want.Type || !bytes.Equal(got.Kv.Key, want.Kv.Key) || got.Kv.ModRevision != want.Kv.ModRevision || !bytes.Equal(got.Kv.Value, want.Kv.Value) {
		return false
	}
	if !prevKV || want.PrevKv == nil {
		return got.PrevKv == nil
	}
	return got.PrevKv != nil && got.PrevKv.ModRevision == want.PrevKv.ModRevision && bytes.Equal(got.PrevKv.Value, want.PrevKv.Value)
}

// check verifies one response a client received against the model: its
// shape (only the fields etcd sets for such a response, and only the
// options the watcher asked for), its revision (never from the future, and
// never below what the watch was already told), and its content.
func (w *World) check(c *Client, r *pb.WatchResponse) {
	rev := r.Header.GetRevision()
	if w.Trace != nil {
		w.Trace("stream %d reads: %v", c.ID, r)
	}
	if r.Header == nil {
		w.violate("stream %d: response without a header: %v", c.ID, r)
	}
	if rev > w.Store.Rev {
		w.violate("stream %d: response at revision %d, past the store's %d: %v", c.ID, rev, w.Store.Rev, r)
	}
	switch {
	case r.Created:
		if len(c.pending) == 0 {
			w.violate("stream %d: created response %v with no create pending", c.ID, r)
			return
		}
		cw := c.pending[0]
		c.pending = c.pending[1:]
		refused := r.WatchId == -1 && r.Canceled
		if h := cw.dupOf; h != nil {
			// Its ID's holder was answered first: a duplicate unless etcd
			// refused the holder.
			if cw.Refused = !h.Refused && !h.CancelSent; !cw.Refused {
				c.chosen[cw.Req.WatchId] = cw
			}
		}
		if c.Token != "" && !cw.Refused {
			// Check (l): etcd's verdict on the token, when the create was
			// made and now; it may have changed in between.
			now := w.authError(c.Token, cw.Req.Key, cw.Req.RangeEnd)
			authRefused := refused && (r.CancelReason == rpctypes.ErrGRPCPermissionDenied.Error() || r.CancelReason == rpctypes.ErrGRPCInvalidAuthToken.Error())
			steady := cw.authEpoch == w.changes[c.Token]
			switch {
			case !steady:
				if authRefused {
					w.Coverage.AuthRefused++
					cw.Ended, cw.Refused = true, true // a refused create frees its ID
					return
				}
			case cw.AuthAtReq != nil && !authRefused:
				w.violate("stream %d (token %s): create %v answered %v; etcd refuses it (%v)", c.ID, c.Token, cw.Req, r, now)
				return
			case cw.AuthAtReq == nil && refused:
				w.violate("stream %d (token %s): create %v refused (%q), though the token may watch the range", c.ID, c.Token, cw.Req, r.CancelReason)
				return
			case authRefused:
				w.Coverage.AuthRefused++
				cw.Ended, cw.Refused = true, true // a refused create frees its ID
				return
			}
		}
		if cw.Refused != refused {
			w.violate("stream %d: create %v answered %v (refusal expected: %v)", c.ID, cw.Req, r, cw.Refused)
			return
		}
		if len(r.Events) > 0 || r.Fragment || r.CompactRevision != 0 || (r.CancelReason != "") != refused {
			w.violate("stream %d: created response with fields etcd does not set: %v", c.ID, r)
		}
		if cw.Refused {
			cw.Ended = true
			return
		}
		if r.Canceled {
			w.violate("stream %d: create %v cancelled at creation: %q", c.ID, cw.Req, r.CancelReason)
			return
		}
		if old := c.watches[r.WatchId]; old != nil && !(old.Ended && old.CancelSent) {
			w.violate("stream %d: watch ID %d created while still in use", c.ID, r.WatchId)
		}
		if cw.Req.WatchId != 0 && r.WatchId != cw.Req.WatchId {
			w.violate("stream %d: asked for watch ID %d, got %d", c.ID, cw.Req.WatchId, r.WatchId)
		}
		if rev < cw.RevAtReq {
			w.violate("stream %d watch %d: created at revision %d, before the request (at %d)", c.ID, r.WatchId, rev, cw.RevAtReq)
		}
		cw.ID, cw.Created, cw.CreatedRev, cw.Told = r.WatchId, true, rev, rev
		cw.createdAt = w.createdAt[r]
		delete(w.createdAt, r)
		cw.Start = cw.Req.StartRevision
		if cw.Start == 0 {
			cw.Start = rev + 1
		}
		c.watches[cw.ID] = cw
	case r.WatchId == -1:
		// A stream's progress answer, and nothing else.
		if r.Canceled || len(r.Events) > 0 || r.Fragment || r.CompactRevision != 0 || r.CancelReason != "" {
			w.violate("stream %d: response for no watch that is not a progress answer: %v", c.ID, r)
			return
		}
		if len(c.progress) == 0 {
			w.violate("stream %d: progress response at %d with no request pending", c.ID, rev)
			return
		}
		asked := c.progress[0]
		c.progress = c.progress[1:]
		if rev < asked {
			w.violate("stream %d: progress at %d for a request made at revision %d", c.ID, rev, asked)
		}
		if rev < c.lastProgress {
			w.violate("stream %d: progress at %d after progress at %d", c.ID, rev, c.lastProgress)
		}
		c.lastProgress = rev
		for _, id := range slices.Sorted(maps.Keys(c.watches)) {
			cw := c.watches[id]
			w.checkCaughtUp(c, cw, rev, "progress")
			if !cw.Ended {
				cw.Told = max(cw.Told, rev)
			}
		}
	default:
		cw := c.watches[r.WatchId]
		if cw == nil {
			w.violate("stream %d: response for unknown watch %d: %v", c.ID, r.WatchId, r)
			return
		}
		if cw.Ended {
			// etcd keeps an ended watch's ID until the client cancels it,
			// and confirms that cancel.
			if cw.CancelSent && !cw.CancelDone && r.Canceled && r.CompactRevision == 0 && len(r.Events) == 0 && r.CancelReason == "" {
				cw.CancelDone = true
				w.Coverage.CancelEnded++
				return
			}
			w.violate("stream %d watch %d: response after the watch ended: %v", c.ID, cw.ID, r)
			return
		}
		switch {
		case r.Fragment && (!cw.Req.Fragment || len(r.Events) == 0):
			w.violate("stream %d watch %d: a fragment for a watch that did not ask for fragments (or without events): %v", c.ID, cw.ID, r)
		case r.CompactRevision != 0 && (!r.Canceled || len(r.Events) > 0):
			w.violate("stream %d watch %d: a compaction that does not end the watch: %v", c.ID, cw.ID, r)
		case r.CancelReason != "" && !r.Canceled:
			w.violate("stream %d watch %d: a cancel reason without a cancel: %v", c.ID, cw.ID, r)
		case r.Canceled && len(r.Events) > 0:
			w.violate("stream %d watch %d: a cancel with events: %v", c.ID, cw.ID, r)
		case r.CompactRevision == 0 && rev < cw.Told:
			// etcd's revisions only grow; a compaction response is the one
			// it sends with revision 0.
			w.violate("stream %d watch %d: response at revision %d after the watch was told %d: %v", c.ID, cw.ID, rev, cw.Told, r)
		}
		if r.Fragment {
			w.Coverage.Fragments++
		}
		w.checkEvents(c, cw, r)
		if r.CompactRevision == 0 {
			cw.Told = max(cw.Told, rev)
		}
		switch {
		case r.CompactRevision != 0:
			exp := w.expected(cw)
			next := cw.Start
			if cw.Got > 0 {
				next = cw.LastRev + 1
			}
			if cw.Got < len(exp) && exp[cw.Got].Kv.ModRevision < next {
				next = exp[cw.Got].Kv.ModRevision
			}
			if next >= r.CompactRevision || r.CompactRevision > w.Store.Compacted {
				w.violate("stream %d watch %d: compaction at %d, but it needed revision %d on and the store is compacted at %d", c.ID, cw.ID, r.CompactRevision, next, w.Store.Compacted)
			}
			cw.Ended = true
		case r.Canceled:
			// Without a request, only etcd can end a watch, and it says why.
			if !cw.CancelSent && r.CancelReason == "" {
				w.violate("stream %d watch %d: cancelled without a request or a reason: %v", c.ID, cw.ID, r)
			}
			w.checkAuthCancel(c, cw, r)
			if rev < cw.LastRev {
				w.violate("stream %d watch %d: cancel at revision %d after an event at %d", c.ID, cw.ID, rev, cw.LastRev)
			}
			cw.Ended = true
		case len(r.Events) == 0:
			if !cw.Req.ProgressNotify {
				w.violate("stream %d watch %d: a progress notification for a watch that did not ask for them: %v", c.ID, cw.ID, r)
			}
			w.Coverage.ProgressNotified++
			w.checkCaughtUp(c, cw, rev, "progress notification")
		}
	}
}

func (w *World) checkEvents(c *Client, cw *ClientWatch, r *pb.WatchResponse) {
	if len(r.Events) == 0 {
		return
	}
	exp := w.expected(cw)
	if first := r.Events[0].Kv.ModRevision; first <= cw.LastRev && !cw.inFragment {
		w.violate("stream %d watch %d: revision %d split across responses or repeated (last response ended at %d)", c.ID, cw.ID, first, cw.LastRev)
	}
	for _, ev := range r.Events {
		if cw.Got >= len(exp) {
			w.violate("stream %d watch %d: unexpected event %s %s@%d (expected only %d)", c.ID, cw.ID, ev.Type, ev.Kv.Key, ev.Kv.ModRevision, len(exp))
			return
		}
		if want := exp[cw.Got]; !sameEvent(ev, want, cw.Req.PrevKv) {
			w.violate("stream %d watch %d (%v): event %d is %s %s=%s@%d prev=%v, want %s %s=%s@%d prev=%v", c.ID, cw.ID, cw.Req, cw.Got,
				ev.Type, ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision, ev.PrevKv != nil, want.Type, want.Kv.Key, want.Kv.Value, want.Kv.ModRevision, want.PrevKv != nil)
			return
		}
		cw.Got++
		cw.LastRev = ev.Kv.ModRevision
		w.checkAuthEvent(c, cw, ev.Kv.ModRevision)
	}
	last := r.Events[len(r.Events)-1].Kv.ModRevision
	if !r.Fragment && cw.Got < len(exp) && exp[cw.Got].Kv.ModRevision == last {
		w.violate("stream %d watch %d: revision %d split across responses", c.ID, cw.ID, last)
	}
	cw.inFragment = r.Fragment
}

// checkCaughtUp: a progress claim at rev means every event up to rev was
// delivered.
func (w *World) checkCaughtUp(c *Client, cw *ClientWatch, rev int64, what string) {
	if !cw.Created || cw.Ended {
		return
	}
	exp := w.expected(cw)
	if cw.Got < len(exp) && exp[cw.Got].Kv.ModRevision <= rev {
		w.violate("stream %d watch %d: %s at %d before event at %d was delivered", c.ID, cw.ID, what, rev, exp[cw.Got].Kv.ModRevision)
	}
}

// ---- the end of a schedule ----

// Settle runs everything to quiescence: fetches answered, upstream streams
// pumped and delivered, keep-alives answered, clients reading (and no
// longer sending keep-alives by themselves), time passing for retries.
func (w *World) Settle() {
	for _, c := range w.Clients {
		c.Reading = true
	}
	w.StopKeepAlives()
	for i := 0; i < 1000; i++ {
		before := w.activity()
		w.ReopenLanes()
		for len(w.served) > 0 {
			w.DeliverFetch(0)
		}
		for len(w.fetches) > 0 {
			w.AnswerFetch(0, false)
		}
		for _, u := range w.UpIDs() {
			w.Pump(u, 1<<30, false)
			w.Deliver(u, 1<<30, func() bool { return true })
		}
		w.settleReads()
		for _, id := range w.clientIDs() {
			w.Read(id)
		}
		w.settleKeepAlives()
		w.Tick(w.Cfg.Port.RetryInterval)
		if w.activity() == before && len(w.reopening) == 0 && w.Pending() == 0 && w.inboxesEmpty() && (w.inUseServes() || !w.canMove()) && w.upstreamsSettled() && w.keepAlivesSettled() {
			return
		}
	}
	w.violate("the world did not settle")
}

// activity is a fingerprint of progress, to detect quiescence.
func (w *World) activity() string {
	var inbox, pending, progress, got int
	for _, c := range w.Clients {
		inbox += len(c.inbox)
		pending += len(c.pending)
		progress += len(c.progress)
		for _, cw := range c.watches {
			got += cw.Got
		}
	}
	creates := 0
	for _, u := range w.UpIDs() {
		creates += w.Up[u].Creates
	}
	return fmt.Sprint(inbox, pending, progress, got, creates, len(w.Up), w.Store.Rev, w.keepAliveActivity())
}

// upstreamsSettled: nothing queued on any upstream stream, every watch
// synced.
func (w *World) upstreamsSettled() bool {
	for _, u := range w.UpIDs() {
		if w.Up[u].Queued() != 0 || !w.Up[u].Synced() {
			return false
		}
	}
	return true
}

func (w *World) inboxesEmpty() bool {
	for _, c := range w.Clients {
		if !c.Closed && len(c.inbox) > 0 {
			return false
		}
	}
	return true
}

func (w *World) clientIDs() []port.StreamID {
	ids := make([]port.StreamID, 0, len(w.Clients))
	for i := port.StreamID(1); i <= w.nextID; i++ {
		if w.Clients[i] != nil {
			ids = append(ids, i)
		}
	}
	return ids
}

// CheckComplete, after Settle: every live watch has every event, every
// create was answered, and progress requests on streams with watchers
// were answered.
func (w *World) CheckComplete() {
	w.Coverage.TotalHolds += int(w.N.Stats().TotalHolds)
	for _, id := range w.clientIDs() {
		c := w.Clients[id]
		if c.Closed {
			continue
		}
		if len(c.pending) > 0 {
			w.violate("stream %d: %d creates never answered", id, len(c.pending))
		}
		for _, cw := range c.watches {
			if cw.Ended {
				continue
			}
			if exp := w.expected(cw); cw.Got != len(exp) {
				w.violate("stream %d watch %d (%v): got %d of %d events", id, cw.ID, cw.Req, cw.Got, len(exp))
			}
		}
		if len(c.progress) > 0 && !w.progressMayStay(c) {
			w.violate("stream %d: %d progress requests never answered", id, len(c.progress))
		}
	}
	w.checkKeepAlivesComplete()
}

// CheckProgressNotified, after Settle: once etcd's progress ticker (and the
// proxy's own, when it has one) has fired twice with nothing written,
// every live watch that asked for notifications knows it is current: it
// has been told the store's revision (unless it starts in the future).
func (w *World) CheckProgressNotified() {
	// Two ticker rounds with no switch of member between them: a switch
	// reopens the upstream watches, and etcd's ticker skips a watch that
	// was sent events since its last tick.
	for quiet, round := 0, 0; quiet < 2 && round < 10; round++ {
		moves := w.moves
		w.ProgressTick()
		w.Settle()
		if w.Cfg.Watch.ProgressInterval > 0 {
			w.Tick(w.Cfg.Watch.ProgressInterval)
			w.Settle()
		}
		if w.moves == moves {
			quiet++
		} else {
			quiet = 0
		}
	}
	for _, id := range w.clientIDs() {
		c := w.Clients[id]
		if c.Closed {
			continue
		}
		for _, wid := range slices.Sorted(maps.Keys(c.watches)) {
			cw := c.watches[wid]
			// (etcd notifies no watch whose start revision is still ahead.)
			if cw.Req.ProgressNotify && !cw.Ended && !cw.CancelSent && cw.Start <= w.Store.Rev && cw.Told < w.Store.Rev {
				w.violate("stream %d watch %d: no progress notification: told %d, the store is at %d", id, cw.ID, cw.Told, w.Store.Rev)
			}
		}
	}
}

// CloseAll closes every stream, settles, and checks that nothing is left
// behind: no upstream watch, no history, no queued bytes, no stream, no
// owed or waiting keep-alive; and, once the longest lease TTL has passed,
// no lease (closeKeepAlives).
func (w *World) CloseAll() {
	for _, id := range w.clientIDs() {
		w.Close(id)
	}
	w.closeKeepAlives()
	w.closeReads()
	if held := testutil.NodeEmpty(w.N.Stats(), w.N.Gauges()); held != "" {
		w.violate("left behind after every client closed: %s", held)
	}
	for _, u := range w.UpIDs() {
		if n, _ := w.Up[u].Open(); n != 0 {
			w.violate("%d upstream watches left open on %v", n, u)
		}
		if u >= port.NumUpstreams {
			w.violate("lane stream %v not ended after every client closed", u)
		}
	}
}

// Clock is the world's clock: it moves only when the world says so. (A
// clock.Mock would do, but it sleeps a millisecond on every move to let
// its timers' goroutines run, and nothing here has any.)
type Clock struct{ now time.Time }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return c.now }

// Set sets the clock's time.
func (c *Clock) Set(t time.Time) { c.now = t }

// Add moves the clock on by d.
func (c *Clock) Add(d time.Duration) { c.now = c.now.Add(d) }
