package lease

import (
	"fmt"
	"math"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/port"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// proxy drives the machine through its API as the composite node does,
// and collects what it hands out: answers per stream, refreshes sent to
// etcd (with the time each was sent).
type proxy struct {
	t       *testing.T
	out     *port.Outbox
	m       *Machine
	now     time.Time
	answers map[port.StreamID][]*pb.LeaseKeepAliveResponse
	queued  map[port.StreamID]int // bytes handed out and not yet written
	flows   map[port.StreamID]*port.Flow
	sent    []sent // refreshes, in order
	checks  []int64
}

type sent struct {
	id int64
	at time.Time
}

// newProxy returns a machine whose streams hold at buffer bytes (0: the
// default bound, which no test reaches).
func newProxy(t *testing.T, buffer int) *proxy {
	p := &proxy{t: t, now: t0, answers: map[port.StreamID][]*pb.LeaseKeepAliveResponse{},
		queued: map[port.StreamID]int{}, flows: map[port.StreamID]*port.Flow{}}
	p.out = port.NewOutbox(port.Config{StreamBufferBytes: buffer}, t0)
	p.m = New(Config{}, p.out, t0)
	return p
}

// collect takes the Ready of the last step.
func (p *proxy) collect() {
	rd := p.out.Ready()
	for _, s := range rd.Sends {
		if s.Lease == nil || s.Response() != nil {
			p.t.Fatalf("a send that is not a keep-alive answer: %v", s)
		}
		if s.Size != proto.Size(s.Lease) {
			p.t.Fatalf("send of %d bytes counted as %d", proto.Size(s.Lease), s.Size)
		}
		p.answers[s.Stream] = append(p.answers[s.Stream], s.Lease)
		p.queued[s.Stream] += s.Size
	}
	for _, u := range rd.Upstream {
		if u.Upstream != port.LeaseKeepAlive || u.Lease == nil || u.Watch != nil {
			p.t.Fatalf("an upstream request that is not a keep-alive: %v", u)
		}
		p.sent = append(p.sent, sent{u.Lease.ID, p.now})
	}
	for _, c := range rd.LeaseChecks {
		p.checks = append(p.checks, c.ID)
	}
	if len(rd.Fetches)+len(rd.Probes)+len(rd.Switches)+len(rd.Ends) > 0 {
		p.t.Fatalf("unexpected outputs: %+v", rd)
	}
	p.out.Advance()
}

func (p *proxy) open(s port.StreamID) {
	p.flows[s] = p.out.OpenStream(s)
	p.m.OpenStream(s, p.flows[s])
	p.collect()
}

func (p *proxy) close(s port.StreamID) {
	p.m.CloseStream(s)
	p.out.CloseStream(s)
	p.collect()
}

func (p *proxy) ask(s port.StreamID, id int64) {
	p.m.KeepAlive(s, id)
	p.collect()
}

// etcd answers the refresh in flight for lease id.
func (p *proxy) etcd(id, ttl int64) {
	p.m.UpstreamResponse(&pb.LeaseKeepAliveResponse{Header: &pb.ResponseHeader{Revision: 7}, ID: id, TTL: ttl})
	p.collect()
}

func (p *proxy) lost() {
	p.m.UpstreamLost()
	p.collect()
}

func (p *proxy) revoked(id int64) {
	p.m.Revoked(id)
	p.collect()
}

func (p *proxy) advance(d time.Duration) {
	p.now = p.now.Add(d)
	p.out.Tick(p.now)
	p.m.Tick(p.now)
	p.collect()
}

// write has the client of stream s read everything handed out to it.
func (p *proxy) write(s port.StreamID) {
	n := p.queued[s]
	p.queued[s] = 0
	if p.out.Written(s, n) {
		p.m.Resume(s)
	}
	p.collect()
}

// take returns the answers stream s got since the last take.
func (p *proxy) take(s port.StreamID) []*pb.LeaseKeepAliveResponse {
	a := p.answers[s]
	delete(p.answers, s)
	return a
}

// refreshes returns the refreshes sent since the last call.
func (p *proxy) refreshes() []sent {
	s := p.sent
	p.sent = nil
	return s
}

func ttls(as []*pb.LeaseKeepAliveResponse) string {
	s := "["
	for i, a := range as {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%d:%d", a.ID, a.TTL)
	}
	return s + "]"
}

func TestFirstKeepAliveIsForwardedAndAnsweredFromEtcd(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.ask(1, 7)
	if r := p.refreshes(); len(r) != 1 || r[0].id != 7 {
		t.Fatalf("refreshes %v, want one for lease 7", r)
	}
	if a := p.take(1); len(a) != 0 {
		t.Fatalf("answered %s before etcd did", ttls(a))
	}
	p.etcd(7, 10)
	a := p.take(1)
	if len(a) != 1 || a[0].ID != 7 || a[0].TTL != 10 || a[0].Header.GetRevision() != 7 {
		t.Fatalf("answers %v, want etcd's TTL 10 for lease 7", a)
	}
	if st := p.m.Stats(); st.Requests != 1 || st.Answered != 1 || st.AnsweredLocal != 0 || st.Refreshes != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRequestsWhileInFlightWaitForTheSameAnswer(t *testing.T) {
	p := newProxy(t, 0)
	for s := port.StreamID(1); s <= 3; s++ {
		p.open(s)
	}
	p.ask(1, 7)
	p.advance(100 * time.Millisecond)
	p.ask(2, 7)
	p.ask(1, 7)
	p.ask(3, 7)
	p.ask(3, 8) // another lease goes on its own
	if r := p.refreshes(); len(r) != 2 || r[0].id != 7 || r[1].id != 8 {
		t.Fatalf("refreshes %v, want one for lease 7 and one for 8", r)
	}
	if g := p.m.Gauges(); g.Waiting != 5 || g.Leases != 2 {
		t.Fatalf("gauges %+v", g)
	}
	p.etcd(7, 10)
	if a1, a2, a3 := p.take(1), p.take(2), p.take(3); len(a1) != 2 || len(a2) != 1 || len(a3) != 1 || a1[0].TTL != 10 || a3[0].ID != 7 {
		t.Fatalf("answers %s %s %s, want two, one and one TTL 10 for lease 7", ttls(a1), ttls(a2), ttls(a3))
	}
	p.etcd(8, 5)
	if a := p.take(3); len(a) != 1 || a[0].ID != 8 || a[0].TTL != 5 {
		t.Fatalf("answers %s", ttls(a))
	}
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("refreshes %v after the answers", r)
	}
	if g := p.m.Gauges(); g.Waiting != 0 {
		t.Fatalf("gauges %+v", g)
	}
}

// A client asking every 100 ms for a TTL-6 lease costs one refresh per
// 2 s (a third of the TTL), whether etcd answers at once or 300 ms later.
func TestRefreshOncePerThirdOfTheTTL(t *testing.T) {
	for _, delay := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(fmt.Sprint(delay), func(t *testing.T) {
			p := newProxy(t, 0)
			p.open(1)
			var due []time.Time // when etcd's answers to the refreshes in flight arrive
			deliver := func() {
				for len(due) > 0 && !due[0].After(p.now) {
					due = due[1:]
					p.etcd(7, 6)
				}
			}
			asks := 0
			for range 300 { // 30 s
				p.ask(1, 7)
				asks++
				for _, r := range p.refreshes() {
					if r.id != 7 {
						t.Fatalf("refresh of lease %d", r.id)
					}
					due = append(due, r.at.Add(delay))
				}
				deliver()
				p.advance(100 * time.Millisecond)
				deliver()
			}
			for len(due) > 0 {
				p.advance(due[0].Sub(p.now))
				due = due[1:]
				p.etcd(7, 6)
			}
			st := p.m.Stats()
			if st.Refreshes != 15 {
				t.Errorf("%d refreshes in 30 s, want 15 (one per 2 s)", st.Refreshes)
			}
			if a := p.take(1); len(a) != asks || st.Answered != int64(asks) {
				t.Errorf("%d answers for %d requests", len(a), asks)
			}
			if st.AnsweredLocal < int64(asks)*8/10 {
				t.Errorf("only %d of %d answered locally", st.AnsweredLocal, asks)
			}
		})
	}
}

// A local answer carries floor(ttl - (now - sentAt)), sentAt being when
// the refresh etcd answered was sent (not when its answer arrived): never
// more than etcd would report.
func TestLocalAnswersCarryWhatIsLeft(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.ask(1, 7)
	sentAt := p.now
	p.refreshes()
	p.advance(700 * time.Millisecond) // etcd's answer takes 700 ms
	p.etcd(7, 6)
	if a := p.take(1); len(a) != 1 || a[0].TTL != 6 {
		t.Fatalf("etcd's own answer relayed as %s", ttls(a))
	}
	for _, step := range []time.Duration{0, 250 * time.Millisecond, 50 * time.Millisecond, 999 * time.Millisecond} {
		p.advance(step)
		p.ask(1, 7)
		a := p.take(1)
		want := int64(math.Floor((6*time.Second - p.now.Sub(sentAt)).Seconds()))
		if len(a) != 1 || a[0].TTL != want || a[0].ID != 7 || a[0].Header.GetRevision() != 7 {
			t.Fatalf("%v after the refresh was sent: answered %v, want TTL %d with etcd's header", p.now.Sub(sentAt), a, want)
		}
		if r := p.refreshes(); len(r) != 0 {
			t.Fatalf("refreshed %v while fresh", r)
		}
	}
	// 2 s after the refresh was sent it is no longer fresh.
	p.advance(sentAt.Add(2 * time.Second).Sub(p.now))
	p.ask(1, 7)
	if r, a := p.refreshes(), p.take(1); len(r) != 1 || len(a) != 0 {
		t.Fatalf("at a third of the TTL: refreshes %v, answers %s", r, ttls(a))
	}
	if st := p.m.Stats(); st.AnsweredLocal != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// A TTL-2 lease (etcd's least) is answered locally only while a whole
// second is left.
func TestShortLeaseAnsweredLocallyOnlyWithASecondLeft(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.ask(1, 7)
	p.etcd(7, 2)
	p.take(1)
	p.refreshes()
	p.advance(600 * time.Millisecond)
	p.ask(1, 7)
	if a := p.take(1); len(a) != 1 || a[0].TTL != 1 {
		t.Fatalf("answers %s, want TTL 1", ttls(a))
	}
	p.advance(100 * time.Millisecond) // 700 ms > 2 s / 3
	p.ask(1, 7)
	if r, a := p.refreshes(), p.take(1); len(r) != 1 || len(a) != 0 {
		t.Fatalf("refreshes %v, answers %s", r, ttls(a))
	}
}

func TestLeaseEtcdDoesNotKnowIsAnsweredZeroAndForgotten(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.open(2)
	p.ask(1, 7)
	p.ask(2, 7)
	p.etcd(7, 0)
	if a1, a2 := p.take(1), p.take(2); len(a1) != 1 || len(a2) != 1 || a1[0].TTL != 0 || a2[0].TTL != 0 {
		t.Fatalf("answers %s %s, want TTL 0", ttls(a1), ttls(a2))
	}
	if g := p.m.Gauges(); g.Leases != 0 || g.Waiting != 0 {
		t.Fatalf("gauges %+v", g)
	}
	p.refreshes()
	p.ask(1, 7)
	if r, a := p.refreshes(), p.take(1); len(r) != 1 || len(a) != 0 {
		t.Fatalf("the next keep-alive: refreshes %v, answers %s", r, ttls(a))
	}
}

func TestRevokedStopsLocalAnswersAtOnce(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.ask(1, 7)
	p.etcd(7, 10)
	p.take(1)
	p.refreshes()
	p.advance(time.Second)
	p.ask(1, 7)
	if a := p.take(1); len(a) != 1 || a[0].TTL != 9 {
		t.Fatalf("fresh lease answered %s", ttls(a))
	}
	p.revoked(7)
	if g := p.m.Gauges(); g.Leases != 0 {
		t.Fatalf("gauges %+v after the revoke", g)
	}
	p.ask(1, 7)
	if r, a := p.refreshes(), p.take(1); len(r) != 1 || len(a) != 0 {
		t.Fatalf("after the revoke: refreshes %v, answers %s", r, ttls(a))
	}
	p.etcd(7, 0)
	if a := p.take(1); len(a) != 1 || a[0].TTL != 0 {
		t.Fatalf("answers %s", ttls(a))
	}
}

// A revoke heard while a refresh is in flight: etcd's answer to that
// refresh (processed before the revoke) may say alive; no request waiting
// for it, and none after it, is told the lease is alive.
func TestRevokedWithARefreshInFlight(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.open(2)
	p.ask(1, 7)
	p.etcd(7, 10)
	p.take(1)
	p.advance(5 * time.Second)
	p.ask(1, 7) // not fresh: a refresh goes out
	if r := p.refreshes(); len(r) != 2 {
		t.Fatalf("refreshes %v", r)
	}
	p.revoked(7)
	p.ask(2, 7) // after the revoke: must not be answered locally
	if a := p.take(2); len(a) != 0 {
		t.Fatalf("answered %s after the revoke", ttls(a))
	}
	p.etcd(7, 10) // etcd renewed it just before the revoke
	a1, a2 := p.take(1), p.take(2)
	if len(a1) != 1 || len(a2) != 1 || a1[0].TTL != 0 || a2[0].TTL != 0 {
		t.Fatalf("answers %s %s: a revoked lease must be answered TTL 0", ttls(a1), ttls(a2))
	}
	if g := p.m.Gauges(); g.Leases != 0 {
		t.Fatalf("gauges %+v", g)
	}
	p.ask(1, 7)
	if r := p.refreshes(); len(r) != 1 {
		t.Fatalf("the next keep-alive: refreshes %v", r)
	}
}

func TestUpstreamLostResendsRefreshesInFlight(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.open(2)
	p.ask(1, 9)
	p.etcd(9, 10) // confirmed: not in flight
	p.ask(1, 7)
	p.ask(2, 8)
	p.ask(2, 7)
	p.refreshes()
	p.advance(time.Second)
	p.lost()
	r := p.refreshes()
	if len(r) != 2 || r[0].id != 7 || r[1].id != 8 || !r[0].at.Equal(p.now) {
		t.Fatalf("after the loss: refreshes %v, want 7 and 8 again", r)
	}
	p.lost() // lost again before any answer: sent again
	if r := p.refreshes(); len(r) != 2 {
		t.Fatalf("after the second loss: refreshes %v", r)
	}
	p.etcd(7, 6)
	p.etcd(8, 6)
	if a1, a2 := p.take(1), p.take(2); len(a1) != 2 || len(a2) != 2 {
		t.Fatalf("answers %s %s, want one per request", ttls(a1), ttls(a2))
	}
	// The lease was confirmed when the resend was sent.
	p.advance(1500 * time.Millisecond)
	p.ask(1, 7)
	if a := p.take(1); len(a) != 1 || a[0].TTL != 4 {
		t.Fatalf("answers %s, want TTL 4", ttls(a))
	}
	p.lost()
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("nothing in flight, yet refreshes %v", r)
	}
}

// A refresh in flight that nobody waits for, for a lease no client asked
// for within its TTL, is not sent again: that would keep the lease alive
// past TTL after the last keep-alive a client sent.
func TestUpstreamLostDropsARefreshNobodyWants(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.ask(1, 7)
	p.etcd(7, 6)
	p.take(1)
	p.advance(3 * time.Second)
	p.ask(1, 7) // not fresh: refreshed
	p.close(1)  // nobody waits any more
	if r := p.refreshes(); len(r) != 2 {
		t.Fatalf("refreshes %v", r)
	}
	p.advance(2 * time.Second)
	p.lost() // asked 2 s ago, within the TTL: sent again
	if r := p.refreshes(); len(r) != 1 {
		t.Fatalf("refreshes %v after a loss within the TTL", r)
	}
	p.advance(5 * time.Second)
	p.lost() // asked 7 s ago: dropped
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("refreshes %v after a loss past the TTL", r)
	}
	p.advance(time.Second)
	if g := p.m.Gauges(); g.Leases != 0 {
		t.Fatalf("gauges %+v", g)
	}
}

// A stream that does not read is held at its bound and owes its answers as
// counts per lease; once it drains, each request gets exactly one answer.
func TestHeldStreamOwesAnswers(t *testing.T) {
	p := newProxy(t, 100)
	p.open(1)
	p.ask(1, 7)
	p.etcd(7, 6)
	asked := map[int64]int{7: 1}
	for !p.flows[1].Held() {
		p.ask(1, 7)
		asked[7]++
	}
	for range 500 {
		p.ask(1, 7)
		p.ask(1, 8)
		asked[7]++
		asked[8]++
	}
	p.advance(100 * time.Millisecond)
	g := p.m.Gauges()
	if g.Owed != 1000 || len(p.m.streams[1].owed) != 2 || len(p.m.streams[1].order) != 2 {
		t.Fatalf("gauges %+v, owed %v: want 1000 answers owed as two counts", g, p.m.streams[1].owed)
	}
	// Lease 8 was never answered by etcd: its first owed request went
	// upstream at once, since the client wants it alive.
	if r := p.refreshes(); len(r) != 2 || r[1].id != 8 {
		t.Fatalf("refreshes %v", r)
	}
	p.etcd(8, 6)
	if g := p.m.Gauges(); g.Owed != 1000 {
		t.Fatalf("gauges %+v after etcd's answer on a held stream", g)
	}
	got := map[int64]int{}
	for _, a := range p.take(1) {
		got[a.ID]++
	}
	for rounds := 0; p.m.Gauges().Owed > 0; rounds++ {
		if rounds > 1000 {
			t.Fatalf("still owed: %+v", p.m.Gauges())
		}
		p.write(1)
		for _, a := range p.take(1) {
			got[a.ID]++
			if a.TTL < 5 || a.TTL > 6 {
				t.Fatalf("answer %v", a)
			}
		}
	}
	if got[7] != asked[7] || got[8] != asked[8] {
		t.Fatalf("answers %v for requests %v", got, asked)
	}
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("refreshes %v while catching up on fresh leases", r)
	}
}

// A stream held while etcd's answer is handed out: the rest is owed as
// counts, then answered as of the moment it drains; a lease no longer
// fresh then goes upstream and every owed request waits for etcd.
func TestHeldStreamCatchesUpFromEtcd(t *testing.T) {
	p := newProxy(t, 60) // an answer is 8 bytes: the eighth holds it
	p.open(1)
	for range 10 {
		p.ask(1, 7)
	}
	p.etcd(7, 6)
	if a, g := p.take(1), p.m.Gauges(); len(a) != 8 || g.Owed != 2 || !p.flows[1].Held() {
		t.Fatalf("%d answers, gauges %+v, held %v", len(a), g, p.flows[1].Held())
	}
	for range 5 {
		p.ask(1, 7)
	}
	p.advance(3 * time.Second) // no longer fresh
	p.refreshes()
	p.write(1) // resumes: the owed requests wait for etcd
	if r, a := p.refreshes(), p.take(1); len(r) != 1 || len(a) != 0 {
		t.Fatalf("on resume: refreshes %v, answers %s", r, ttls(a))
	}
	if g := p.m.Gauges(); g.Waiting != 7 || g.Owed != 0 {
		t.Fatalf("gauges %+v", g)
	}
	p.etcd(7, 6)
	n := len(p.take(1))
	for p.m.Gauges().Owed > 0 {
		p.write(1)
		n += len(p.take(1))
	}
	if n != 7 {
		t.Fatalf("%d answers for 7 owed requests", n)
	}
}

func TestCloseStreamDropsItsWaiters(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.open(2)
	p.ask(1, 7)
	p.ask(2, 7)
	p.ask(1, 7)
	p.close(1)
	if g := p.m.Gauges(); g.Waiting != 1 || g.Streams != 1 {
		t.Fatalf("gauges %+v", g)
	}
	p.etcd(7, 6)
	if a1, a2 := p.take(1), p.take(2); len(a1) != 0 || len(a2) != 1 {
		t.Fatalf("answers %s %s", ttls(a1), ttls(a2))
	}
	p.ask(1, 7) // a closed stream: ignored
	if a := p.take(1); len(a) != 0 || p.m.Stats().Requests != 3 {
		t.Fatalf("answers %s on a closed stream, stats %+v", ttls(a), p.m.Stats())
	}
}

func TestTickForgetsLeasesNoLongerAskedFor(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.ask(1, 7)
	p.etcd(7, 6)
	p.ask(1, 8) // never answered: kept while in flight
	p.ask(1, 9)
	p.etcd(9, 0) // unknown to etcd: forgotten at once
	if g := p.m.Gauges(); g.Leases != 2 {
		t.Fatalf("gauges %+v", g)
	}
	p.advance(6 * time.Second)
	if g := p.m.Gauges(); g.Leases != 2 {
		t.Fatalf("forgotten within the TTL: %+v", g)
	}
	p.advance(100 * time.Millisecond)
	if g := p.m.Gauges(); g.Leases != 2 {
		t.Fatalf("swept again within a second: %+v", g)
	}
	p.advance(sweepEvery - 100*time.Millisecond) // the next sweep
	if g := p.m.Gauges(); g.Leases != 1 {
		t.Fatalf("gauges %+v past the TTL", g)
	}
	p.etcd(8, 6)
	p.advance(6100 * time.Millisecond)
	if g := p.m.Gauges(); g.Leases != 0 || g.Waiting != 0 {
		t.Fatalf("gauges %+v", g)
	}
}

// Forgetting a lease while its last refresh is fresh would send the next
// keep-alive to etcd early: a refresh made for a request a held stream
// owed is kept until it is no longer fresh.
func TestTickKeepsAFreshLease(t *testing.T) {
	p := newProxy(t, 10)
	p.open(1)
	p.open(2)
	p.ask(1, 7)
	p.ask(1, 7)
	p.etcd(7, 6) // two answers of 8 bytes: stream 1 is held
	p.ask(1, 7)  // owed; fresh: no refresh
	p.advance(5 * time.Second)
	p.write(1) // not fresh: the owed request goes to etcd at 5 s
	p.etcd(7, 6)
	p.refreshes()
	for p.m.Gauges().Owed > 0 {
		p.write(1)
	}
	p.advance(1500 * time.Millisecond) // 6.5 s after the last ask
	p.ask(2, 7)
	if r, a := p.refreshes(), p.take(2); len(r) != 0 || len(a) != 1 || a[0].TTL != 4 {
		t.Fatalf("1.5 s after a refresh: refreshes %v, answers %s", r, ttls(a))
	}
}

// Once clients stop asking, no refresh is ever sent again, whatever
// happens upstream, and the machine forgets the lease.
func TestNoRefreshAfterClientsStop(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	p.open(2)
	for range 100 { // 10 s
		p.ask(1, 7)
		p.ask(2, 8)
		for _, r := range p.refreshes() {
			p.etcd(r.id, 6)
		}
		p.advance(100 * time.Millisecond)
	}
	p.close(2)
	for i := range 600 { // a minute
		p.advance(100 * time.Millisecond)
		if i%70 == 0 {
			p.lost()
		}
		if r := p.refreshes(); len(r) != 0 {
			t.Fatalf("%v after the last keep-alive: refreshes %v", p.now.Sub(t0)-10*time.Second, r)
		}
	}
	if g := p.m.Gauges(); g.Leases != 0 || g.Waiting != 0 || g.Owed != 0 || g.Streams != 1 {
		t.Fatalf("gauges %+v", g)
	}
}

// A refresh a held stream's owed request causes on resuming does not count
// as a client asking: once that stream has closed, a loss does not send it
// again, the client's last keep-alive being older than the TTL.
func TestResumeIsNoNewAsk(t *testing.T) {
	p := newProxy(t, 10)
	p.open(1)
	p.ask(1, 7)
	p.etcd(7, 8)
	p.ask(1, 7) // answered locally: 16 bytes, held
	for range 3 {
		p.ask(1, 7) // owed
	}
	p.advance(9 * time.Second) // lease 7 forgotten
	if g := p.m.Gauges(); g.Leases != 0 || g.Owed != 3 {
		t.Fatalf("gauges %+v", g)
	}
	p.write(1) // the owed requests go to etcd
	p.etcd(7, 8)
	p.advance(3 * time.Second) // no longer fresh
	p.write(1)                 // the one still owed goes to etcd
	if r := p.refreshes(); len(r) != 3 {
		t.Fatalf("refreshes %v", r)
	}
	p.close(1)
	p.advance(time.Second)
	p.lost() // 13 s after the client's last keep-alive
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("refreshes %v after a loss, 13 s after the last keep-alive of a TTL-8 lease", r)
	}
}

// A refresh a request causes takes along every other lease that has
// fallen due and that a client asked for within a third of its TTL; not
// one still fresh, nor one whose clients went quiet.
func TestDueLeasesRideAlongWithARefresh(t *testing.T) {
	p := newProxy(t, 0)
	p.open(1)
	for _, id := range []int64{7, 8, 9, 10} {
		p.ask(1, id)
		p.etcd(id, 6) // confirmed at t0: due at t0+2s
	}
	p.advance(500 * time.Millisecond)
	p.ask(1, 11)
	p.etcd(11, 6) // confirmed at 0.5 s: due at 2.5 s
	p.refreshes()
	p.take(1)

	p.advance(time.Second) // 1.5 s
	p.ask(1, 8)            // fresh: answered locally
	p.ask(1, 9)
	p.ask(1, 11)
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("refreshes %v while every lease is fresh", r)
	}
	p.advance(700 * time.Millisecond) // 2.2 s: 7 to 10 due, 11 fresh
	p.ask(1, 10)                      // not fresh: refreshed, and 8 and 9 (asked 0.7 s ago) with it
	var got []int64
	for _, r := range p.refreshes() {
		got = append(got, r.id)
	}
	// 7 was last asked 2.2 s ago (more than a third of 6 s): its clients
	// are quiet, it is left to their next request. 11 is not due.
	if fmt.Sprint(got) != "[10 8 9]" {
		t.Fatalf("refreshes %v, want [10 8 9]", got)
	}
	if st := p.m.Stats(); st.Piggybacked != 2 || st.Refreshes != 8 {
		t.Fatalf("stats %+v", st)
	}
	if a := p.take(1); len(a) != 3 || a[0].TTL != 4 || a[1].TTL != 4 || a[2].TTL != 5 {
		t.Fatalf("answers %s, want the local answers at 1.5 s for 8, 9, 11 only (10 waits for etcd)", ttls(a))
	}
	p.etcd(8, 6)
	p.etcd(9, 6)
	if a := p.take(1); len(a) != 0 {
		t.Fatalf("answers %s for piggybacked refreshes no request waits on", ttls(a))
	}
	p.etcd(10, 6)
	if a := p.take(1); len(a) != 1 || a[0].ID != 10 || a[0].TTL != 6 {
		t.Fatalf("answers %s, want etcd's for 10", ttls(a))
	}
	// 8 is fresh again from the piggybacked refresh sent at 2.2 s.
	p.advance(time.Second)
	p.ask(1, 8)
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("refreshes %v for a lease refreshed 1 s ago", r)
	}
	if a := p.take(1); len(a) != 1 || a[0].TTL != 5 {
		t.Fatalf("answers %s, want 8 with TTL 5 (6 s from 2.2 s, at 3.2 s)", ttls(a))
	}
}
