package lease

import (
	"errors"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

func newScopedProxy(t *testing.T, buffer int) *proxy {
	p := newProxy(t, buffer)
	p.m = New(Config{Namespaced: true}, p.out, t0)
	return p
}

func (p *proxy) checked(id int64, r port.LeaseCheckResult) {
	p.m.Checked(id, r)
	p.collect()
}

func (p *proxy) takeChecks() []int64 {
	c := p.checks
	p.checks = nil
	return c
}

var (
	mine    = port.LeaseCheckResult{Header: &pb.ResponseHeader{Revision: 3}, Found: true, Mine: true, TTL: 6}
	foreign = port.LeaseCheckResult{Header: &pb.ResponseHeader{Revision: 3}, Found: true, TTL: 6}
	missing = port.LeaseCheckResult{Header: &pb.ResponseHeader{Revision: 3}}
)

// Under a namespace the first request for a lease waits for one ownership
// check, whichever streams ask meanwhile; the namespace's lease then goes
// to etcd as any other, and the verdict serves every later request.
func TestScopeChecksALeaseOnce(t *testing.T) {
	p := newScopedProxy(t, 0)
	p.open(1)
	p.open(2)
	p.ask(1, 7)
	p.ask(2, 7)
	if c := p.takeChecks(); fmt.Sprint(c) != "[7]" {
		t.Fatalf("checks %v, want one for 7", c)
	}
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("refreshed %v before the check", r)
	}
	if a := p.take(1); len(a) != 0 {
		t.Fatalf("answered %s before the check", ttls(a))
	}
	p.checked(7, mine)
	if r := p.refreshes(); len(r) != 1 || r[0].id != 7 {
		t.Fatalf("refreshes %v after the check, want one for 7", r)
	}
	p.etcd(7, 6)
	if a1, a2 := p.take(1), p.take(2); len(a1) != 1 || len(a2) != 1 || a1[0].TTL != 6 || a2[0].TTL != 6 {
		t.Fatalf("answers %s %s, want etcd's TTL 6 on both", ttls(a1), ttls(a2))
	}
	p.advance(3 * time.Second) // due: refreshed, no check
	p.ask(2, 7)
	if c, r := p.takeChecks(), p.refreshes(); len(c) != 0 || len(r) != 1 {
		t.Fatalf("checks %v refreshes %v, want no check and one refresh", c, r)
	}
	if st := p.m.Stats(); st.Checks != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Another namespace's lease is answered TTL 0 (with the check's header),
// never refreshed, and later requests are answered from the verdict; a
// lease etcd does not have is answered TTL 0 and not remembered.
func TestScopeAnswersForeignAndMissingLeasesWithTTL0(t *testing.T) {
	p := newScopedProxy(t, 0)
	p.open(1)
	p.ask(1, 8)
	p.ask(1, 8)
	p.checked(8, foreign)
	p.ask(1, 8)
	a := p.take(1)
	if len(a) != 3 || a[0].TTL != 0 || a[2].TTL != 0 || a[0].Header.GetRevision() != 3 {
		t.Fatalf("answers %s, want three TTL 0", ttls(a))
	}
	if r, c := p.refreshes(), p.takeChecks(); len(r) != 0 || len(c) != 1 {
		t.Fatalf("refreshes %v checks %v, want none and one", r, c)
	}
	p.ask(1, 9)
	p.checked(9, missing)
	p.ask(1, 9)
	if c := p.takeChecks(); fmt.Sprint(c) != "[9 9]" {
		t.Fatalf("checks %v: a missing lease is checked again", c)
	}
	p.checked(9, missing)
	if a := p.take(1); len(a) != 2 || a[0].TTL != 0 || a[1].TTL != 0 {
		t.Fatalf("answers %s", ttls(a))
	}
	if g := p.m.Gauges(); g.Verdicts != 1 || g.Waiting != 0 || g.Checking != 0 {
		t.Fatalf("gauges %+v, want only 8's verdict", g)
	}
}

// A failed check is asked again at the next sweep while requests wait.
func TestScopeRetriesAFailedCheck(t *testing.T) {
	p := newScopedProxy(t, 0)
	p.open(1)
	p.ask(1, 7)
	p.takeChecks()
	p.checked(7, port.LeaseCheckResult{Err: errors.New("unavailable")})
	if c := p.takeChecks(); len(c) != 0 {
		t.Fatalf("checked again at once: %v", c)
	}
	p.advance(sweepEvery)
	if c := p.takeChecks(); fmt.Sprint(c) != "[7]" {
		t.Fatalf("checks %v after the sweep, want [7]", c)
	}
	p.checked(7, mine)
	p.etcd(7, 6)
	if a := p.take(1); len(a) != 1 || a[0].TTL != 6 {
		t.Fatalf("answers %s", ttls(a))
	}
}

// A verdict goes with its lease: revoked through the proxy, answered TTL 0
// by etcd, not listed by LeaseLeases, or not seen alive for its TTL.
func TestScopeForgetsVerdicts(t *testing.T) {
	p := newScopedProxy(t, 0)
	p.open(1)
	for _, id := range []int64{1, 2, 3, 4} {
		p.ask(1, id)
		p.checked(id, mine)
		p.etcd(id, 6)
	}
	p.checked(5, foreign) // learned from a TimeToLive: nothing waits
	if g := p.m.Gauges(); g.Verdicts != 5 {
		t.Fatalf("gauges %+v", g)
	}
	p.revoked(1)
	p.advance(3 * time.Second)
	p.ask(1, 2)
	p.etcd(2, 0) // expired on etcd
	p.m.Listed([]int64{3, 4, 5})
	if v := p.m.Verdicts([]int64{1, 2, 3, 4, 5, 6}); fmt.Sprint(v) != "[0 0 1 1 2 0]" {
		t.Fatalf("verdicts %v", v)
	}
	// 3 is kept alive (seen at each refresh); 4 and 5 are not.
	for range 4 {
		p.advance(2 * time.Second)
		p.ask(1, 3)
		if len(p.refreshes()) > 0 {
			p.etcd(3, 6)
		}
	}
	if v := p.m.Verdicts([]int64{3, 4, 5}); fmt.Sprint(v) != "[1 0 0]" {
		t.Fatalf("verdicts %v after 8 s, want only 3's", v)
	}
}

// A held stream owes the request; the check is still made, and the answer
// comes when the stream drains.
func TestScopeOnAHeldStream(t *testing.T) {
	p := newScopedProxy(t, 10)
	p.open(1)
	p.ask(1, 8)
	p.ask(1, 8)
	p.checked(8, foreign) // two answers of 8 bytes: held
	p.ask(1, 8)
	p.ask(1, 9) // owed, checked meanwhile
	if c := p.takeChecks(); fmt.Sprint(c) != "[8 9]" {
		t.Fatalf("checks %v", c)
	}
	p.checked(9, mine)
	if r := p.refreshes(); len(r) != 0 {
		t.Fatalf("refreshes %v with nothing waiting", r)
	}
	p.take(1)
	for p.m.Gauges().Owed > 0 {
		p.write(1)
	}
	p.write(1)
	if r := p.refreshes(); len(r) != 1 || r[0].id != 9 {
		t.Fatalf("refreshes %v after draining, want 9's", r)
	}
	p.etcd(9, 6)
	if a := p.take(1); len(a) != 2 || a[0].ID != 8 || a[0].TTL != 0 || a[1].ID != 9 || a[1].TTL != 6 {
		t.Fatalf("answers %s, want 8:0 9:6", ttls(a))
	}
}
