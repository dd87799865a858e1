package lease

import (
	"container/heap"
	"math"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/simfault"
)

// Machine is the keep-alive coalescing machine. It is not safe for
// concurrent use: one event loop owns it, through the composite node.
type Machine struct {
	cfg    Config
	out    *port.Outbox
	now    time.Time
	leases map[int64]*lease
	// inflight indexes the leases with a refresh in flight (the only ones
	// requests can wait on), so that closing a stream or losing the
	// upstream costs what is in flight, not every lease tracked.
	inflight map[int64]*lease
	streams  map[port.StreamID]*stream
	// due orders the confirmed leases by when their refresh falls due,
	// for piggybacking (see piggyback).
	due dueHeap
	// swept is when Tick last looked for leases to forget.
	swept time.Time
	scope scope
	stats Stats
}

// Config sets what the machine serves.
type Config struct {
	// Namespaced: the proxy serves a namespace, and a client may keep
	// alive only the namespace's leases (see scope.go).
	Namespaced bool
}

// sweepEvery is how often Tick looks for leases to forget: forgetting is
// only memory, so it need not happen on every tick of a large table.
const sweepEvery = time.Second

// lease is what the machine knows of one lease.
type lease struct {
	id int64
	// ttl is the lease's TTL as etcd last answered it, and base when the
	// refresh etcd answered was sent: etcd's expiry is no earlier than
	// base + ttl. known is false until etcd answered (or after a revoke
	// through the proxy).
	ttl    int64
	base   time.Time
	header *pb.ResponseHeader
	known  bool
	// revoked: revoked through the proxy while a refresh was in flight;
	// its answer may say alive, but the machine must not believe it.
	revoked bool
	// lastAsked is when a client last asked to keep it alive.
	lastAsked time.Time
	// The refresh (or, under a namespace, ownership check) in flight, and
	// the requests waiting for its answer, in order.
	checking bool
	inflight bool
	sentAt   time.Time
	waiters  []port.StreamID
}

// stream is a client LeaseKeepAlive stream.
type stream struct {
	flow *port.Flow
	// owed counts answers held back while the stream was over its bound,
	// by lease, in the order the leases first owed one.
	owed  map[int64]int
	order []int64
}

// Stats are the machine's counters.
type Stats struct {
	Requests      int64 // client keep-alive requests taken
	Answered      int64 // client requests answered
	AnsweredLocal int64 // of those, answered without a request to etcd
	Refreshes     int64 // keep-alive requests sent to etcd
	Piggybacked   int64 // of those, sent along with another lease's refresh
	Checks        int64 // lease ownership checks asked of the shell (namespace)
}

// Gauges are the machine's current state.
type Gauges struct {
	Leases  int // leases tracked
	Streams int // client keep-alive streams
	Owed    int // answers owed to streams over their bound
	Waiting int // requests waiting for etcd's answer
	// Under a namespace: leases whose ownership the machine remembers,
	// and ownership checks in flight.
	Verdicts, Checking int
}

// New returns an empty machine; now is the clock's reading.
func New(cfg Config, out *port.Outbox, now time.Time) *Machine {
	return &Machine{cfg: cfg, out: out, now: now, swept: now, scope: newScope(),
		leases: map[int64]*lease{}, inflight: map[int64]*lease{}, streams: map[port.StreamID]*stream{}}
}

// OpenStream registers a client keep-alive stream and its flow control.
func (m *Machine) OpenStream(id port.StreamID, flow *port.Flow) {
	m.streams[id] = &stream{flow: flow, owed: map[int64]int{}}
}

// Has reports whether id is one of the machine's streams.
func (m *Machine) Has(id port.StreamID) bool { return m.streams[id] != nil }

// CloseStream forgets a client stream: nothing more is answered on it. The
// leases it kept alive are refreshed only if other streams ask.
func (m *Machine) CloseStream(id port.StreamID) {
	if m.streams[id] == nil {
		return
	}
	delete(m.streams, id)
	for _, waiting := range []map[int64]*lease{m.inflight, m.scope.checking} {
		for _, l := range waiting {
			kept := l.waiters[:0]
			for _, w := range l.waiters {
				if w != id {
					kept = append(kept, w)
				}
			}
			clear(l.waiters[len(kept):])
			l.waiters = kept
		}
	}
}

// KeepAlive takes a client's keep-alive request for lease id on stream s.
func (m *Machine) KeepAlive(s port.StreamID, id int64) {
	st := m.streams[s]
	if st == nil {
		return
	}
	m.stats.Requests++
	l := m.leases[id]
	if l == nil {
		l = &lease{id: id}
		m.leases[id] = l
	}
	l.lastAsked = m.now
	m.serve(s, st, l)
}

// serve takes one request of stream s for l: answers it, has it wait for
// etcd's answer, or owes it while the stream is held.
func (m *Machine) serve(s port.StreamID, st *stream, l *lease) {
	held := st.flow.Held()
	if m.cfg.Namespaced && !m.inScope(s, st, l, held) {
		return
	}
	if held {
		// The answer waits until the stream drains; the lease is still
		// refreshed if it is due, since the client wants it alive.
		m.owe(st, l.id)
		if !m.fresh(l) {
			m.refresh(l)
			m.piggyback()
		}
		return
	}
	if m.fresh(l) {
		m.answerLocal(s, l)
		return
	}
	l.waiters = append(l.waiters, s)
	m.refresh(l)
	m.piggyback()
}

// fresh reports whether the machine may answer for l without asking etcd:
// etcd confirmed it less than TTL/3 ago, and it has a whole second left.
func (m *Machine) fresh(l *lease) bool {
	if !l.known || l.ttl <= 0 {
		return false
	}
	if simfault.On("lease-never-fresh") {
		return false
	}
	age := m.now.Sub(l.base)
	if simfault.On("lease-fresh-for-ttl") {
		return age < time.Duration(l.ttl)*time.Second
	}
	return age < third(l) && m.remaining(l) >= 1
}

// remaining is the TTL etcd would report now, at most: whole seconds left
// of ttl since the refresh was sent.
func (m *Machine) remaining(l *lease) int64 {
	if simfault.On("lease-full-ttl") {
		return l.ttl
	}
	left := l.base.Add(time.Duration(l.ttl) * time.Second).Sub(m.now)
	return int64(math.Floor(left.Seconds()))
}

// refresh sends a keep-alive for l to etcd unless one is in flight.
func (m *Machine) refresh(l *lease) {
	if l.inflight {
		return
	}
	l.inflight, l.sentAt = true, m.now
	m.inflight[l.id] = l
	m.stats.Refreshes++
	m.out.Upstream(port.UpstreamRequest{Upstream: port.LeaseKeepAlive, Lease: &pb.LeaseKeepAliveRequest{ID: l.id}})
}

// UpstreamResponse takes etcd's answer to a refresh.
func (m *Machine) UpstreamResponse(r *pb.LeaseKeepAliveResponse) {
	l := m.leases[r.ID]
	if l == nil || !l.inflight {
		return // a lease forgotten meanwhile (its answer is void)
	}
	l.inflight = false
	delete(m.inflight, l.id)
	if r.TTL > 0 && !l.revoked {
		l.known, l.ttl, l.base, l.header = true, r.TTL, l.sentAt, r.Header
		heap.Push(&m.due, dueEntry{at: l.base.Add(third(l)), base: l.base, l: l})
		m.scope.seen(r.ID, m.now)
	} else {
		l.known = false
		m.scope.forget(r.ID)
	}
	if l.revoked && r.TTL > 0 {
		// etcd renewed it before the revoke the proxy has heard of since:
		// the lease is gone now, and a request waiting (maybe made after
		// the revoke) must hear so, as etcd would answer it now.
		r = &pb.LeaseKeepAliveResponse{Header: r.Header, ID: r.ID}
	}
	waiters := l.waiters
	l.waiters = nil
	for i, s := range waiters {
		if simfault.On("lease-drop-answer") && i == 1 {
			continue
		}
		m.answer(s, proto.Clone(r).(*pb.LeaseKeepAliveResponse))
	}
	if !l.known {
		delete(m.leases, r.ID) // etcd does not know it, or it was revoked
	}
}

// UpstreamLost: the upstream stream broke; every refresh in flight that a
// client still wants (a request waits for its answer, or a client asked
// for the lease within its TTL) is sent again on the new one. One nobody
// wants any more is dropped: sending it would keep the lease alive on
// etcd past TTL after the last keep-alive a client sent.
func (m *Machine) UpstreamLost() {
	for _, id := range m.sortedInflight() {
		l := m.leases[id]
		l.inflight = false
		delete(m.inflight, id)
		wanted := len(l.waiters) > 0 || m.now.Sub(l.lastAsked) <= time.Duration(l.ttl)*time.Second
		if wanted && !simfault.On("lease-no-resend") {
			m.refresh(l)
		}
	}
}

// Revoked hears of a revoke made through the proxy: the machine answers no
// more for the lease, and the next keep-alive goes to etcd.
func (m *Machine) Revoked(id int64) {
	m.scope.forget(id)
	if l := m.leases[id]; l != nil {
		l.known, l.revoked = false, true
		if !l.inflight && !l.checking && len(l.waiters) == 0 {
			delete(m.leases, id)
		}
	}
}

// Resume catches up a stream that drained below its bound: each request it
// is owed an answer for is answered as of now (or waits for etcd's, when
// the machine has no fresh one), until the stream is held again.
func (m *Machine) Resume(id port.StreamID) {
	st := m.streams[id]
	if st == nil {
		return
	}
	for len(st.order) > 0 && !st.flow.Held() {
		lid := st.order[0]
		if st.owed[lid]--; st.owed[lid] == 0 {
			delete(st.owed, lid)
			st.order = st.order[1:]
		}
		l := m.leases[lid]
		if l == nil {
			// Forgotten meanwhile. The request was made when it was
			// owed, not now: lastAsked stays unknown (zero), so that a
			// refresh made for it is not sent again after a loss once
			// nobody waits for it.
			l = &lease{id: lid}
			m.leases[lid] = l
		}
		m.serve(id, st, l)
	}
}

// Tick advances the clock and forgets leases no client asked for within
// their TTL (nothing refreshes them any more) once their last refresh is
// no longer fresh: forgetting a fresh one would send the next keep-alive
// for it to etcd sooner than a third of its TTL after the last. It looks
// once per sweepEvery, so a lease may be kept that much longer.
func (m *Machine) Tick(now time.Time) {
	m.now = now
	if now.Sub(m.swept) < sweepEvery {
		return
	}
	m.swept = now
	for id, l := range m.leases {
		ttl := time.Duration(max(l.ttl, 1)) * time.Second
		if !l.inflight && !l.checking && len(l.waiters) == 0 && now.Sub(l.lastAsked) > ttl && !m.fresh(l) {
			delete(m.leases, id)
		}
	}
	// Entries for leases forgotten or confirmed again since go too.
	kept := m.due[:0]
	for _, e := range m.due {
		if m.current(e) {
			kept = append(kept, e)
		}
	}
	clear(m.due[len(kept):])
	m.due = kept
	heap.Init(&m.due)
	m.sweepScope()
}

// piggyback sends, along with a refresh a client's request just caused,
// the refreshes of every other lease that has fallen due (its last
// confirmed refresh is a third of its TTL old) and that a client asked for
// within that third. Each of those would go out alone at its next request
// anyway; sent together they reach etcd as one burst rather than a stream
// of single messages, which costs etcd several times less per renewal.
// Asked within a third of the TTL, a lease refreshed so still expires no
// later than TTL + TTL/3 after its last keep-alive.
func (m *Machine) piggyback() {
	for len(m.due) > 0 && !m.due[0].at.After(m.now) {
		e := heap.Pop(&m.due).(dueEntry)
		l := e.l
		if !m.current(e) || l.inflight || !l.known {
			continue
		}
		if m.now.Sub(l.lastAsked) > third(l) && !simfault.On("lease-piggyback-unasked") {
			continue // its clients are quiet: leave it to their next request
		}
		m.stats.Piggybacked++
		m.refresh(l)
	}
}

// current reports whether a due entry is still the lease's latest.
func (m *Machine) current(e dueEntry) bool {
	return m.leases[e.l.id] == e.l && e.l.known && e.l.base.Equal(e.base)
}

func third(l *lease) time.Duration { return time.Duration(l.ttl) * time.Second / 3 }

func (m *Machine) answerLocal(s port.StreamID, l *lease) {
	m.stats.AnsweredLocal++
	m.answer(s, &pb.LeaseKeepAliveResponse{Header: l.header, ID: l.id, TTL: m.remaining(l)})
}

// answer sends r on stream s, or owes it while the stream is held.
func (m *Machine) answer(s port.StreamID, r *pb.LeaseKeepAliveResponse) {
	st := m.streams[s]
	if st == nil {
		return
	}
	if st.flow.Held() {
		m.owe(st, r.ID)
		return
	}
	m.stats.Answered++
	m.out.Send(port.Send{Stream: s, Lease: r, Size: proto.Size(r)})
	if simfault.On("lease-answer-twice") && r.TTL > 0 && m.stats.Answered%7 == 0 {
		m.out.Send(port.Send{Stream: s, Lease: r, Size: proto.Size(r)})
	}
}

func (m *Machine) owe(st *stream, id int64) { m.oweN(st, id, 1) }

func (m *Machine) oweN(st *stream, id int64, n int) {
	if st.owed[id] == 0 {
		st.order = append(st.order, id)
	}
	st.owed[id] += n
}

func (m *Machine) sortedInflight() []int64 {
	ids := make([]int64, 0, len(m.inflight))
	for id := range m.inflight {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Stats returns the counters.
func (m *Machine) Stats() Stats { return m.stats }

// Gauges counts the current state.
func (m *Machine) Gauges() Gauges {
	g := Gauges{Leases: len(m.leases), Streams: len(m.streams), Verdicts: len(m.scope.verdicts), Checking: len(m.scope.checking)}
	for _, st := range m.streams {
		for _, n := range st.owed {
			g.Owed += n
		}
	}
	for _, l := range m.leases {
		g.Waiting += len(l.waiters)
	}
	return g
}

// dueEntry is a confirmed refresh of a lease, and when the next falls due.
type dueEntry struct {
	at, base time.Time
	l        *lease
}

// dueHeap orders due entries by time, then lease ID (deterministic).
type dueHeap []dueEntry

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].l.id < h[j].l.id
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = dueEntry{}
	*h = old[:len(old)-1]
	return e
}
