package sim

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// The lease half of the world: etcd's leases, the proxy's one upstream
// LeaseKeepAlive stream, and client keep-alive streams.
//
// etcd's leases are granted with a TTL (at least MinLeaseTTL, as etcd
// raises a shorter one) and expire on the world's clock at the last
// renewal plus the TTL; they are revoked through the proxy (etcd revokes,
// then the node hears LeaseRevoked, as the shell tells it after a
// successful revoke) or directly on etcd, which the proxy does not hear
// of. IDs are never reused.
//
// The keep-alive stream: etcd processes a request when the node sends it
// (renewing a live lease: expiry = now + TTL, answer TTL; answer TTL 0 for
// a lease it does not have), and the answer reaches the node later, by a
// world step (AnswerKeepAlives), in order, several at once. While the
// member in use cannot serve keep-alives (silent or leaderless: a member
// that merely fell behind still forwards renewals to the leader, which do
// not go through raft's apply, as etcd does) requests wait unprocessed and
// answers are not delivered; when it heals they are processed. The stream
// breaks (LoseKeepAlive) as when the proxy moves to another member: every
// request and answer on it is lost, and the node hears UpstreamLost.
//
// The checks, made as the world runs:
//
//   - (a) Every client keep-alive request is answered exactly once, on its
//     own stream: an answer for a lease the stream has no request
//     outstanding for is a violation at once, and after settling no open
//     stream may have a request outstanding.
//   - (b) An answer's TTL is never more than etcd would report: TTL 0 only
//     for a lease etcd does not have at that moment (never granted,
//     expired, revoked). A positive TTL is either etcd's own answer,
//     relayed in the step that delivered it, or a local answer: then the
//     node must hold a confirmation (the last answer etcd gave it for the
//     lease, positive, not since revoked through the proxy) whose request
//     was sent less than a third of the TTL ago, and the TTL must be at
//     most floor(sent + TTL - now), so at most floor(expiry - now) on
//     etcd. The race allowed: a lease revoked directly on etcd (or, with a
//     relayed answer, expired or revoked after etcd answered) may still be
//     answered as alive within that third of the TTL, as the proxy cannot
//     know before its next refresh. After the node heard LeaseRevoked, no
//     positive answer at all, relayed or local.
//   - (c) A refresh (keep-alive request to etcd) is sent only in the step
//     of a client's keep-alive for that lease, of a held stream resuming
//     with a request for it outstanding, or of a lost stream (sending
//     again a refresh that was in flight), or taken along (piggybacked)
//     in the step of a client's keep-alive or a resuming stream for
//     another lease: then only for a lease a client asked for within a
//     third of its TTL and whose last confirmed refresh was sent at least
//     a third of its TTL ago. Never two in flight for one lease; and
//     never for a lease no client asked for within its TTL unless a
//     request for it is still outstanding on an open stream.
//   - (d) No lease expires on etcd less than 2/3 of its TTL after a
//     client's last keep-alive for it, when etcd was reachable throughout:
//     from that keep-alive to the expiry the member in use could serve
//     keep-alives, the stream was not lost, and no answer for the lease
//     waited more than a third of the TTL between etcd's processing and
//     its delivery. Expiries outside such windows are not judged; those
//     judged are counted (Coverage.LeaseExpiryJudged).
//   - (e) Refresh economy: two refreshes of one lease processed by etcd
//     less than a third of its TTL apart only when the first was voided
//     (the stream was lost before its answer arrived), was answered TTL 0,
//     or the lease was revoked through the proxy; when the first waited
//     unprocessed (an unreachable member), the third of the TTL is measured
//     between the times the node sent them.
//
// Once every stream is closed and the longest TTL has passed, the node
// must hold no lease, stream, owed answer or waiting request (CloseAll).

// MinLeaseTTL is etcd's least lease TTL with its default election timeout
// (1 s): it raises a shorter grant to 1.5 election timeouts, rounded up.
const MinLeaseTTL = 2

// EtcdLease is one of etcd's leases, and what the checks follow of it.
type EtcdLease struct {
	ID      int64
	TTL     int64 // granted; 0 for an ID etcd never granted
	Granted bool
	Expiry  time.Time
	// Gone: expired or revoked (GoneAt); ViaProxy: revoked through the
	// proxy, which the node has been told.
	Gone     bool
	GoneAt   time.Time
	ViaProxy bool
	// asked: a client asked for it, last at lastAsk.
	asked   bool
	lastAsk time.Time
	// inflight is the node's refresh in flight (sent, its answer not
	// delivered, not lost); conf the node's confirmation: the last answer
	// delivered for it, when positive; lastProc the last refresh etcd
	// processed.
	inflight *keepAliveReq
	conf     *keepAliveReq
	lastProc *keepAliveReq
	// slowAt is the last time an answer for it waited more than a third
	// of its TTL for delivery.
	slowAt time.Time
}

// keepAliveReq is one request on the upstream keep-alive stream.
type keepAliveReq struct {
	id          int64
	sentAt      time.Time
	processed   bool
	processedAt time.Time
	resp        *pb.LeaseKeepAliveResponse
	voided      bool // the stream was lost before its answer arrived
}

// KeepAliveClient is a client LeaseKeepAlive stream and what it expects.
type KeepAliveClient struct {
	ID      port.StreamID
	Reading bool
	Closed  bool
	inbox   []port.Send
	// owed counts the requests not yet answered, per lease.
	owed map[int64]int
	// every holds the leases it keeps alive by itself, with the period it
	// asks at, and next when it asks next.
	every map[int64]time.Duration
	next  map[int64]time.Time
}

// leaseWorld is the lease half of a World.
type leaseWorld struct {
	Leases     map[int64]*EtcdLease
	KeepAlives map[port.StreamID]*KeepAliveClient
	nextLease  int64
	// The upstream keep-alive stream: requests etcd has not processed
	// (its member could not serve them), and answers not yet delivered.
	unprocessed []*keepAliveReq
	answers     []*keepAliveReq
	// brokenAt is the last time the stream was lost or etcd was
	// unreachable for keep-alives (as of a change; unreachable now counts
	// as now).
	brokenAt     time.Time
	reachable    bool
	delivering   *pb.LeaseKeepAliveResponse // the answer the current step delivers
	lostInflight map[int64]bool             // the refreshes in flight when the stream was lost, in that step
	stepIn       node.Input                 // the input of the current step
}

func newLeaseWorld() leaseWorld {
	return leaseWorld{Leases: map[int64]*EtcdLease{}, KeepAlives: map[port.StreamID]*KeepAliveClient{}, reachable: true}
}

// ---- etcd ----

// Grant has etcd grant a lease with ttl seconds (raised to MinLeaseTTL)
// and returns its ID.
func (w *World) Grant(ttl int64) int64 {
	w.nextLease++
	ttl = max(ttl, MinLeaseTTL)
	id := w.nextLease
	w.Leases[id] = &EtcdLease{ID: id, TTL: ttl, Granted: true, Expiry: w.Clock.Now().Add(time.Duration(ttl) * time.Second)}
	return id
}

// lease returns the model's record of lease id, one for an ID etcd never
// granted if need be.
func (w *World) lease(id int64) *EtcdLease {
	l := w.Leases[id]
	if l == nil {
		l = &EtcdLease{ID: id, Gone: true}
		w.Leases[id] = l
	}
	return l
}

// alive reports whether etcd has the lease now.
func (l *EtcdLease) alive() bool { return l.Granted && !l.Gone }

func (l *EtcdLease) third() time.Duration { return time.Duration(l.TTL) * time.Second / 3 }

// Alive returns the IDs of etcd's live leases.
func (w *World) Alive() []int64 {
	var ids []int64
	for _, id := range slices.Sorted(maps.Keys(w.Leases)) {
		if w.Leases[id].alive() {
			ids = append(ids, id)
		}
	}
	return ids
}

// Revoke revokes a live lease: through the proxy (etcd revokes it, then the
// node hears of it, as the shell tells it after a successful revoke), or
// directly on etcd. Through the proxy, a silent or leaderless member in use
// revokes nothing, and one that fell behind never applies the revoke it
// forwarded: the cluster revokes the lease, but the call times out and the
// node hears nothing, as of a direct revoke.
func (w *World) Revoke(id int64, viaProxy bool) {
	l := w.Leases[id]
	if l == nil || !l.alive() || (viaProxy && !w.reachable) {
		return
	}
	l.Gone, l.GoneAt = true, w.Clock.Now()
	if !viaProxy || (w.inUse != nil && w.inUse.Fault == Behind) {
		return
	}
	l.ViaProxy = true
	l.conf = nil
	if l.inflight != nil {
		w.Coverage.LeaseRevokedInFlight++
	}
	w.step(node.LeaseRevoked{ID: id})
}

// expireLeases has etcd expire every lease whose time has come (the clock
// just moved), judging each expiry by check (d).
func (w *World) expireLeases() {
	now := w.Clock.Now()
	for _, id := range slices.Sorted(maps.Keys(w.Leases)) {
		l := w.Leases[id]
		if !l.alive() || l.Expiry.After(now) {
			continue
		}
		l.Gone, l.GoneAt = true, l.Expiry
		if l.asked && w.judgeable(l, l.Expiry) {
			w.Coverage.LeaseExpiryJudged++
			if since := l.Expiry.Sub(l.lastAsk); since < 2*time.Duration(l.TTL)*time.Second/3 {
				w.violate("lease %d (TTL %d s) expired %v after a client's keep-alive, with etcd reachable throughout", id, l.TTL, since)
			}
		}
	}
}

// judgeable reports whether etcd was reachable for lease l from the last
// keep-alive a client sent for it to at: the member in use could serve
// keep-alives, the stream was not lost, and no answer for l waited more
// than a third of its TTL.
func (w *World) judgeable(l *EtcdLease, at time.Time) bool {
	if !w.reachable || !w.brokenAt.Before(l.lastAsk) || !l.slowAt.Before(l.lastAsk) {
		return false
	}
	for _, r := range w.answers {
		if r.id == l.ID && at.Sub(r.processedAt) > l.third() {
			return false
		}
	}
	return true
}

// leaseReachable reports whether the member in use serves keep-alives.
func (w *World) leaseReachable() bool {
	m := w.inUse
	return m == nil || m.Fault == Healthy || m.Fault == Behind
}

// noteReachability follows a change of the member in use or of its fault.
func (w *World) noteReachability() {
	r := w.leaseReachable()
	if r != w.reachable || !r {
		w.brokenAt = w.Clock.Now()
	}
	w.reachable = r
}

// processKeepAlives has etcd process the requests waiting on the stream,
// once its member can.
func (w *World) processKeepAlives() {
	if !w.reachable {
		return
	}
	reqs := w.unprocessed
	w.unprocessed = nil
	for _, r := range reqs {
		w.process(r)
	}
}

// process is etcd processing keep-alive request r now.
func (w *World) process(r *keepAliveReq) {
	now := w.Clock.Now()
	l := w.lease(r.id)
	var ttl int64
	if l.alive() {
		ttl = l.TTL
		l.Expiry = now.Add(time.Duration(ttl) * time.Second)
	}
	// (e) refresh economy.
	if p := l.lastProc; p != nil && l.Granted && now.Sub(p.processedAt) < l.third() {
		late := p.processedAt.After(p.sentAt)
		switch {
		case p.voided, p.resp.TTL == 0, l.ViaProxy:
		case late && r.sentAt.Sub(p.sentAt) >= l.third():
		default:
			w.violate("lease %d (TTL %d s) refreshed on etcd %v after the last refresh (sent %v, processed %v)", r.id, l.TTL, now.Sub(p.processedAt), p.sentAt.Sub(time.Unix(0, 0)), p.processedAt.Sub(time.Unix(0, 0)))
		}
	}
	r.processed, r.processedAt = true, now
	r.resp = &pb.LeaseKeepAliveResponse{Header: &pb.ResponseHeader{ClusterId: 1, MemberId: 1, Revision: w.Store.Rev, RaftTerm: 1}, ID: r.id, TTL: ttl}
	l.lastProc = r
	w.answers = append(w.answers, r)
}

// AnswerKeepAlives delivers up to n of etcd's keep-alive answers to the
// node, in order (none while the member in use cannot serve them).
func (w *World) AnswerKeepAlives(n int) {
	for ; n > 0 && w.reachable && len(w.answers) > 0; n-- {
		r := w.answers[0]
		w.answers = w.answers[1:]
		l := w.lease(r.id)
		now := w.Clock.Now()
		if l.Granted && now.Sub(r.processedAt) > l.third() {
			l.slowAt = now
		}
		if l.inflight == r {
			l.inflight = nil
		}
		l.conf = nil
		if r.resp.TTL > 0 && !l.ViaProxy {
			l.conf = r
		}
		w.delivering = r.resp
		w.step(node.UpstreamResponse{Upstream: port.LeaseKeepAlive, Lease: r.resp})
		w.delivering = nil
	}
}

// LoseKeepAlive breaks the upstream keep-alive stream: what etcd did not
// process, and the answers not delivered, are lost.
func (w *World) LoseKeepAlive() {
	w.lostInflight = map[int64]bool{}
	for _, r := range append(w.unprocessed, w.answers...) {
		r.voided = true
		if l := w.lease(r.id); l.inflight == r {
			l.inflight = nil
			w.lostInflight[r.id] = true
		}
	}
	w.unprocessed, w.answers = nil, nil
	w.brokenAt = w.Clock.Now()
	w.step(node.UpstreamLost{Upstream: port.LeaseKeepAlive})
	w.lostInflight = nil
}

// ---- the node's outputs ----

// keepAliveRequest takes a refresh the node sends to etcd, checking (c).
func (w *World) keepAliveRequest(req *pb.LeaseKeepAliveRequest) {
	if req == nil {
		w.violate("a keep-alive upstream request without a lease request")
		return
	}
	now := w.Clock.Now()
	l := w.lease(req.ID)
	if w.Trace != nil {
		w.Trace("keep-alive upstream request: lease %d", req.ID)
	}
	outstanding := false
	for _, c := range w.KeepAlives {
		if !c.Closed && c.owed[req.ID] > 0 {
			outstanding = true
		}
	}
	switch in := w.stepIn.(type) {
	case node.KeepAlive:
		if in.ID != req.ID {
			w.piggybacked(l, fmt.Sprintf("a client's keep-alive for lease %d", in.ID))
		}
	case node.Written:
		if c := w.KeepAlives[in.Stream]; c == nil || c.owed[req.ID] == 0 {
			w.piggybacked(l, fmt.Sprintf("stream %d resuming with no request for it outstanding", in.Stream))
		}
	case node.UpstreamLost:
		if !w.lostInflight[req.ID] {
			w.violate("lease %d refreshed after the stream was lost, though no refresh of it was in flight", req.ID)
		}
		w.Coverage.LeaseResent++
	default:
		w.violate("lease %d refreshed on %v, not on a client's request", req.ID, w.stepIn)
	}
	if l.inflight != nil {
		w.violate("lease %d refreshed while a refresh of it is in flight (sent %v ago)", req.ID, now.Sub(l.inflight.sentAt))
	}
	if !outstanding && (!l.asked || now.Sub(l.lastAsk) > time.Duration(l.TTL)*time.Second) {
		w.violate("lease %d (TTL %d s) refreshed, but no client asked for it within its TTL (last %v ago) and no request waits", req.ID, l.TTL, now.Sub(l.lastAsk))
	}
	r := &keepAliveReq{id: req.ID, sentAt: now}
	l.inflight = r
	if w.reachable {
		w.process(r)
	} else {
		w.unprocessed = append(w.unprocessed, r)
	}
}

// piggybacked checks (c) for a refresh of l sent in the step of another
// lease's (named by cause): allowed only for a lease a client asked for
// within a third of its TTL, whose last confirmed refresh was sent at
// least a third of its TTL ago, so that it still expires no later than
// TTL + TTL/3 after its last keep-alive.
func (w *World) piggybacked(l *EtcdLease, cause string) {
	now := w.Clock.Now()
	switch {
	case !l.asked || now.Sub(l.lastAsk) > l.third():
		w.violate("lease %d (TTL %d s) refreshed on %s, though no client asked for it within a third of its TTL (last %v ago)", l.ID, l.TTL, cause, now.Sub(l.lastAsk))
	case l.conf == nil:
		w.violate("lease %d refreshed on %s with no confirmed refresh to be due", l.ID, cause)
	case now.Sub(l.conf.sentAt) < l.third():
		w.violate("lease %d (TTL %d s) refreshed on %s %v after its last confirmed refresh was sent: not yet due", l.ID, l.TTL, cause, now.Sub(l.conf.sentAt))
	default:
		w.Coverage.LeasePiggybacked++
	}
}

// keepAliveAnswer takes an answer the node hands a client stream, checking
// (a) and (b).
func (w *World) keepAliveAnswer(s port.Send) {
	c := w.KeepAlives[s.Stream]
	if c == nil || s.Watch != nil {
		w.violate("keep-alive answer %v for stream %d, which is no keep-alive stream", s.Lease, s.Stream)
		return
	}
	if c.Closed {
		return
	}
	r := s.Lease
	if w.Trace != nil {
		w.Trace("stream %d is answered: lease %d TTL %d", s.Stream, r.ID, r.TTL)
	}
	c.inbox = append(c.inbox, s)
	if c.owed[r.ID] == 0 {
		w.violate("stream %d: answer for lease %d (TTL %d) with no request for it outstanding", c.ID, r.ID, r.TTL)
		return
	}
	if c.owed[r.ID]--; c.owed[r.ID] == 0 {
		delete(c.owed, r.ID)
	}
	if _, ok := w.stepIn.(node.Written); ok {
		w.Coverage.LeaseHeldAnswered++
	}
	now := w.Clock.Now()
	l := w.lease(r.ID)
	switch {
	case r.Header == nil:
		w.violate("stream %d: keep-alive answer without a header: %v", c.ID, r)
	case r.TTL < 0:
		w.violate("stream %d: keep-alive answer with TTL %d", c.ID, r.TTL)
	case r.TTL == 0:
		if l.alive() {
			w.violate("stream %d: lease %d answered TTL 0, but etcd has it (%v left)", c.ID, r.ID, l.Expiry.Sub(now))
		}
	case l.ViaProxy:
		w.violate("stream %d: lease %d answered TTL %d after the node heard it was revoked", c.ID, r.ID, r.TTL)
	case w.delivering != nil && w.delivering.ID == r.ID && w.delivering.TTL == r.TTL:
		// etcd's own answer, relayed as it arrives.
	default:
		w.Coverage.LeaseLocal++
		cf := l.conf
		switch {
		case cf == nil:
			w.violate("stream %d: lease %d answered TTL %d locally, with no confirmation from etcd", c.ID, r.ID, r.TTL)
		case now.Sub(cf.sentAt) >= time.Duration(cf.resp.TTL)*time.Second/3:
			w.violate("stream %d: lease %d answered TTL %d locally from a refresh sent %v ago (TTL %d s)", c.ID, r.ID, r.TTL, now.Sub(cf.sentAt), cf.resp.TTL)
		case r.TTL > floorSeconds(cf.sentAt.Add(time.Duration(cf.resp.TTL)*time.Second).Sub(now)):
			w.violate("stream %d: lease %d answered TTL %d locally, more than is left (refresh sent %v ago, TTL %d s)", c.ID, r.ID, r.TTL, now.Sub(cf.sentAt), cf.resp.TTL)
		case l.alive() && r.TTL > floorSeconds(l.Expiry.Sub(now)):
			w.violate("stream %d: lease %d answered TTL %d locally, more than etcd's %v left", c.ID, r.ID, r.TTL, l.Expiry.Sub(now))
		}
	}
}

func floorSeconds(d time.Duration) int64 { return int64(math.Floor(d.Seconds())) }

// ---- clients ----

// OpenKeepAlive opens a client LeaseKeepAlive stream.
func (w *World) OpenKeepAlive() port.StreamID {
	w.nextID++
	id := w.nextID
	w.KeepAlives[id] = &KeepAliveClient{ID: id, Reading: true, owed: map[int64]int{}, every: map[int64]time.Duration{}, next: map[int64]time.Time{}}
	w.step(node.OpenStream{Stream: id, Lease: true})
	return id
}

// KeepAlive sends a keep-alive request for lease id on stream s.
func (w *World) KeepAlive(s port.StreamID, id int64) {
	c := w.KeepAlives[s]
	if c == nil || c.Closed {
		return
	}
	l := w.lease(id)
	l.asked, l.lastAsk = true, w.Clock.Now()
	c.owed[id]++
	w.step(node.KeepAlive{Stream: s, ID: id})
}

// KeepAliveEvery has stream s ask for lease id every period from now on
// (on the world's ticks), or stop asking for it when period is 0.
func (w *World) KeepAliveEvery(s port.StreamID, id int64, period time.Duration) {
	c := w.KeepAlives[s]
	if c == nil || c.Closed {
		return
	}
	if period <= 0 {
		delete(c.every, id)
		delete(c.next, id)
		return
	}
	c.every[id] = period
	c.next[id] = w.Clock.Now()
}

// ReadKeepAlive has stream s take every answer waiting for it.
func (w *World) ReadKeepAlive(s port.StreamID) {
	c := w.KeepAlives[s]
	if c == nil || c.Closed || !c.Reading {
		return
	}
	n := 0
	for _, a := range c.inbox {
		n += a.Size
	}
	c.inbox = nil
	if n > 0 {
		w.step(node.Written{Stream: s, Bytes: n})
	}
}

// CloseKeepAlive closes keep-alive stream s.
func (w *World) CloseKeepAlive(s port.StreamID) {
	c := w.KeepAlives[s]
	if c == nil || c.Closed {
		return
	}
	c.Closed = true
	w.step(node.CloseStream{Stream: s})
}

// keepAliveIDs returns the open keep-alive streams, in order.
func (w *World) keepAliveIDs() []port.StreamID {
	var ids []port.StreamID
	for _, id := range slices.Sorted(maps.Keys(w.KeepAlives)) {
		if !w.KeepAlives[id].Closed {
			ids = append(ids, id)
		}
	}
	return ids
}

// keepAliveTick has the streams send the keep-alives due, and the reading
// ones read.
func (w *World) keepAliveTick() {
	now := w.Clock.Now()
	for _, s := range w.keepAliveIDs() {
		c := w.KeepAlives[s]
		for _, id := range slices.Sorted(maps.Keys(c.every)) {
			if !c.next[id].After(now) {
				c.next[id] = now.Add(c.every[id])
				w.KeepAlive(s, id)
			}
		}
		w.ReadKeepAlive(s)
	}
}

// StopKeepAlives has every stream stop asking by itself.
func (w *World) StopKeepAlives() {
	for _, c := range w.KeepAlives {
		clear(c.every)
		clear(c.next)
	}
}

// ---- settling and the end ----

// settleKeepAlives is one round of Settle for leases: etcd answers, every
// stream reads.
func (w *World) settleKeepAlives() {
	w.processKeepAlives()
	w.AnswerKeepAlives(len(w.answers))
	for _, s := range w.keepAliveIDs() {
		w.KeepAlives[s].Reading = true
		w.ReadKeepAlive(s)
	}
}

// keepAlivesSettled reports whether nothing is left to do for leases (or
// nothing can be done while the member in use cannot serve keep-alives).
func (w *World) keepAlivesSettled() bool {
	for _, c := range w.KeepAlives {
		if !c.Closed && len(c.inbox) > 0 {
			return false
		}
	}
	return !w.reachable || (len(w.unprocessed) == 0 && len(w.answers) == 0)
}

// keepAliveActivity is a fingerprint of the lease half's progress.
func (w *World) keepAliveActivity() string {
	owed := 0
	for _, c := range w.KeepAlives {
		for _, n := range c.owed {
			owed += n
		}
	}
	return fmt.Sprint(owed, len(w.unprocessed), len(w.answers))
}

// checkKeepAlivesComplete, after Settle: every request on an open stream
// was answered.
func (w *World) checkKeepAlivesComplete() {
	for _, s := range w.keepAliveIDs() {
		c := w.KeepAlives[s]
		for _, id := range slices.Sorted(maps.Keys(c.owed)) {
			w.violate("stream %d: %d keep-alives for lease %d never answered", s, c.owed[id], id)
		}
	}
}

// closeKeepAlives, in CloseAll: every keep-alive stream closes; once
// settled the node holds no keep-alive stream, owed answer or waiting
// request, and once the longest TTL has passed, no lease either, having
// sent etcd nothing more.
func (w *World) closeKeepAlives() {
	for _, s := range w.keepAliveIDs() {
		w.CloseKeepAlive(s)
	}
	w.Settle()
	if g := w.N.Gauges().Lease; g.Streams != 0 || g.Owed != 0 || g.Waiting != 0 {
		w.violate("left behind after every keep-alive stream closed: %+v", g)
	}
	var longest int64
	for _, l := range w.Leases {
		longest = max(longest, l.TTL)
	}
	for end := w.Clock.Now().Add(time.Duration(longest+1) * time.Second); w.Clock.Now().Before(end); {
		w.Tick(500 * time.Millisecond)
		w.settleKeepAlives()
	}
	if g := w.N.Gauges().Lease; g.Leases != 0 {
		w.violate("%d leases still held %d s after every keep-alive stream closed", g.Leases, longest+1)
	}
	if len(w.unprocessed)+len(w.answers) > 0 {
		w.violate("keep-alive requests still on the upstream stream after every keep-alive stream closed")
	}
}
