package failover

import (
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/etcdproxy/etcdproxy/core/port"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// cluster plays etcd members for the machine: each probe is answered
// after rtt with what the member's behaviour says at that moment.
// fataler is what the harness needs of testing.T and rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

type cluster struct {
	t        fataler
	m        *Machine
	out      *port.Outbox
	now      time.Time
	behave   map[string]func() port.ProbeResult // nil answer: silent
	inflight []flight
	switches []port.Switch
	rtt      time.Duration
}

type flight struct {
	p  port.Probe
	at time.Time
}

func newCluster(t fataler, cfg Config, members ...string) *cluster {
	c := &cluster{t: t, now: t0, behave: map[string]func() port.ProbeResult{}, rtt: 2 * time.Millisecond}
	c.out = port.NewOutbox(port.Config{}, t0)
	c.m = New(cfg, c.out, members, t0)
	for _, mb := range members {
		c.set(mb, healthy(100))
	}
	c.collect()
	return c
}

func healthy(index uint64) func() port.ProbeResult {
	return func() port.ProbeResult { return port.ProbeResult{Health: port.ProbeHealthy, Applied: index} }
}

func (c *cluster) set(mb string, f func() port.ProbeResult) { c.behave[mb] = f }

func (c *cluster) collect() {
	rd := c.out.Ready()
	for _, p := range rd.Probes {
		c.inflight = append(c.inflight, flight{p, c.now})
	}
	for _, sw := range rd.Switches {
		// Every switch for a failure leaves a member that failed for that
		// reason, for a healthy one; judged at the moment of the switch.
		if sw.Reason != ReasonStart && sw.Reason != ReasonRemoved {
			from, to := c.m.find(sw.From), c.m.find(sw.To)
			if got := c.m.failed(from); got != sw.Reason {
				c.t.Fatalf("switch %v, but the member left is judged %q", sw, got)
			}
			if !c.m.healthy(to) {
				c.t.Fatalf("switch %v to a member that is not healthy: %v", sw, c.m)
			}
		}
	}
	c.switches = append(c.switches, rd.Switches...)
	c.out.Advance()
}

// run advances time by d in 10 ms steps, answering probes as they come due.
func (c *cluster) run(d time.Duration) {
	end := c.now.Add(d)
	for c.now.Before(end) {
		c.now = c.now.Add(10 * time.Millisecond)
		c.m.Tick(c.now)
		c.collect()
		var keep []flight
		for _, f := range c.inflight {
			if c.now.Sub(f.at) < c.rtt {
				keep = append(keep, f)
				continue
			}
			b := c.behave[f.p.Member]
			if b == nil {
				continue // silent: never answered
			}
			c.m.Probed(f.p.Member, f.p.Seq, b())
			c.collect()
		}
		c.inflight = keep
	}
}

// runUntilSwitch runs until a switch past the ones seen, or limit.
func (c *cluster) runUntilSwitch(limit time.Duration) (port.Switch, time.Duration) {
	n, start := len(c.switches), c.now
	for c.now.Sub(start) < limit {
		c.run(10 * time.Millisecond)
		if len(c.switches) > n {
			return c.switches[n], c.now.Sub(start)
		}
	}
	c.t.Fatalf("no switch within %v: %v", limit, c.m)
	return port.Switch{}, 0
}

func (c *cluster) noSwitchFor(d time.Duration) {
	n := len(c.switches)
	c.run(d)
	if len(c.switches) > n {
		c.t.Fatalf("unexpected switch %v; state %v", c.switches[n:], c.m)
	}
}

func TestStartsOnTheFirstMember(t *testing.T) {
	c := newCluster(t, Config{}, "a", "b", "c")
	if len(c.switches) != 1 || c.switches[0] != (port.Switch{To: "a", Reason: ReasonStart}) {
		t.Fatalf("switches at start: %v", c.switches)
	}
	c.noSwitchFor(10 * time.Second)
	if st := c.m.Stats(); st.Healthy != 3 || st.Member != "a" {
		t.Fatalf("stats %+v", st)
	}
}

func TestSilentMemberIsLeftWithinTheBound(t *testing.T) {
	c := newCluster(t, Config{Timeout: time.Second}, "a", "b", "c")
	c.run(time.Second)
	c.set("a", nil)
	sw, took := c.runUntilSwitch(5 * time.Second)
	if sw.From != "a" || sw.Reason != ReasonSilent || sw.To == "a" {
		t.Fatalf("switch %v", sw)
	}
	// A probe was in flight or due within ProbeInterval; it is given up
	// on after Timeout.
	if took > time.Second+time.Second/4+20*time.Millisecond {
		t.Fatalf("left a silent member after %v", took)
	}
}

func TestUnreachableMemberIsLeftAtOnce(t *testing.T) {
	c := newCluster(t, Config{Timeout: time.Second}, "a", "b", "c")
	c.run(time.Second)
	c.set("a", func() port.ProbeResult { return port.ProbeResult{Health: port.ProbeUnreachable} })
	sw, took := c.runUntilSwitch(5 * time.Second)
	if sw.Reason != ReasonUnreachable || took > time.Second/4+20*time.Millisecond {
		t.Fatalf("switch %v after %v", sw, took)
	}
}

func TestLeaderlessMemberIsLeftButAnElectionIsNot(t *testing.T) {
	noLeader := func() port.ProbeResult { return port.ProbeResult{Health: port.ProbeNoLeader} }
	c := newCluster(t, Config{Timeout: time.Second}, "a", "b", "c")
	c.run(time.Second)
	// An election: every member without a leader for 1.5 s. Nowhere to go.
	for _, mb := range []string{"a", "b", "c"} {
		c.set(mb, noLeader)
	}
	c.noSwitchFor(1500 * time.Millisecond)
	if st := c.m.Stats(); st.Stuck != ReasonNoLeader {
		t.Fatalf("stuck = %q", st.Stuck)
	}
	for _, mb := range []string{"a", "b", "c"} {
		c.set(mb, healthy(100))
	}
	c.noSwitchFor(time.Second)
	// A short blip on the member in use alone is ridden out too.
	c.set("a", noLeader)
	c.noSwitchFor(500 * time.Millisecond)
	c.set("a", healthy(100))
	c.noSwitchFor(2 * time.Second)
	// Cut off from its peers: left after Timeout without a leader.
	c.set("a", noLeader)
	sw, took := c.runUntilSwitch(5 * time.Second)
	if sw.Reason != ReasonNoLeader || took < time.Second || took > time.Second+time.Second/4+20*time.Millisecond {
		t.Fatalf("switch %v after %v", sw, took)
	}
	if _, ok := c.m.Leaderless(); ok {
		t.Fatal("the member in use has no leader after the switch")
	}
}

func TestMemberFallingBehindIsLeft(t *testing.T) {
	c := newCluster(t, Config{Timeout: time.Second}, "a", "b", "c")
	idx := uint64(100)
	moving := func() port.ProbeResult { return port.ProbeResult{Health: port.ProbeHealthy, Applied: idx} }
	c.set("b", moving)
	c.set("c", moving)
	c.set("a", moving)
	for range 50 {
		idx++
		c.run(20 * time.Millisecond)
	}
	if len(c.switches) != 1 {
		t.Fatalf("switched while every member keeps up: %v", c.switches)
	}
	frozen := idx
	c.set("a", healthy(frozen))
	n := len(c.switches)
	start := c.now
	for len(c.switches) == n && c.now.Sub(start) < 5*time.Second {
		idx++
		c.run(20 * time.Millisecond)
	}
	if len(c.switches) == n {
		t.Fatalf("never left a member stuck at %d while the cluster is at %d: %v", frozen, idx, c.m)
	}
	sw, took := c.switches[n], c.now.Sub(start)
	if sw.Reason != ReasonBehind || took < time.Second || took > time.Second+time.Second/4+40*time.Millisecond {
		t.Fatalf("switch %v after %v", sw, took)
	}
}

func TestNoFlapping(t *testing.T) {
	cfg := Config{Timeout: time.Second, Recovery: 5 * time.Second}
	c := newCluster(t, cfg, "a", "b", "c")
	c.run(time.Second)
	c.set("a", nil)
	if sw, _ := c.runUntilSwitch(5 * time.Second); sw.To != "b" {
		t.Fatalf("switch %v", sw)
	}
	// a comes back: b keeps working, so it stays on b.
	c.set("a", healthy(100))
	c.noSwitchFor(20 * time.Second)
	// a flaps; then b fails: c is chosen, not the flapping a, though a's
	// last answer was good and it is listed first.
	for range 10 {
		c.set("a", healthy(100))
		c.run(2 * time.Second)
		c.set("a", func() port.ProbeResult { return port.ProbeResult{Health: port.ProbeUnreachable} })
		c.run(500 * time.Millisecond)
	}
	c.set("a", healthy(100))
	c.run(time.Second)
	c.set("b", nil)
	if sw, _ := c.runUntilSwitch(5 * time.Second); sw.To != "c" || sw.From != "b" {
		t.Fatalf("switch %v; state %v", sw, c.m)
	}
	// a, healthy for Recovery now, may take over when c fails.
	c.run(cfg.Recovery)
	c.set("c", nil)
	if sw, _ := c.runUntilSwitch(5 * time.Second); sw.To != "a" {
		t.Fatalf("switch %v; state %v", sw, c.m)
	}
	if got := c.m.Stats().Switches; got[ReasonSilent] != 3 || got[ReasonStart] != 1 {
		t.Fatalf("switches %v", got)
	}
}

func TestNeverSwitchesToAnUnhealthyMember(t *testing.T) {
	c := newCluster(t, Config{Timeout: time.Second}, "a", "b", "c")
	c.run(time.Second)
	c.set("b", nil)
	c.set("c", func() port.ProbeResult { return port.ProbeResult{Health: port.ProbeNoLeader} })
	c.run(2 * time.Second)
	c.set("a", nil)
	c.noSwitchFor(5 * time.Second)
	if st := c.m.Stats(); st.Stuck != ReasonSilent || st.Member != "a" {
		t.Fatalf("stats %+v", st)
	}
	c.set("c", healthy(100))
	if sw, _ := c.runUntilSwitch(2 * time.Second); sw.To != "c" {
		t.Fatalf("switch %v", sw)
	}
}

func TestPrefersTheMemberFurthestAhead(t *testing.T) {
	c := newCluster(t, Config{Timeout: time.Second}, "a", "b", "c")
	c.set("b", healthy(100))
	c.set("c", healthy(105))
	c.set("a", healthy(105))
	c.run(time.Second)
	c.set("a", nil)
	if sw, _ := c.runUntilSwitch(5 * time.Second); sw.To != "c" {
		t.Fatalf("switch %v", sw)
	}
}

func TestMembershipChange(t *testing.T) {
	c := newCluster(t, Config{Timeout: time.Second}, "a", "b", "c")
	c.run(time.Second)
	c.m.SetMembers([]string{"a", "c", "d"})
	c.set("d", healthy(100))
	c.collect()
	if len(c.switches) != 1 {
		t.Fatalf("switched though the member in use stays: %v", c.switches)
	}
	c.m.SetMembers([]string{"c", "d"})
	c.collect()
	if sw := c.switches[len(c.switches)-1]; sw != (port.Switch{From: "a", To: "c", Reason: ReasonRemoved}) {
		t.Fatalf("switch %v", sw)
	}
	c.noSwitchFor(3 * time.Second)
	if st := c.m.Stats(); st.Members != 2 || st.Healthy != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLateAnswersAreIgnored(t *testing.T) {
	c := newCluster(t, Config{Timeout: time.Second}, "a", "b")
	c.run(time.Second)
	c.set("a", nil)
	var lost []flight
	for _, f := range c.inflight {
		if f.p.Member == "a" {
			lost = append(lost, f)
		}
	}
	c.runUntilSwitch(3 * time.Second)
	// The answers to probes given up on arrive now: they change nothing.
	for _, f := range lost {
		c.m.Probed("a", f.p.Seq, port.ProbeResult{Health: port.ProbeHealthy, Applied: 100})
	}
	c.collect()
	if h := c.m.members[0].health; h != port.ProbeNoAnswer {
		t.Fatalf("a's health after late answers: %v", h)
	}
}

// TestRandomBehaviour drives the machine with random member behaviour: every
// switch is checked as it happens (see collect), only one probe is in flight
// per member, and a member in use that stays healthy is never left.
func TestRandomBehaviour(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		names := []string{"a", "b", "c"}
		c := newCluster(rt, Config{Timeout: time.Second}, names...)
		kinds := []port.ProbeHealth{port.ProbeHealthy, port.ProbeNoLeader, port.ProbeUnreachable, port.ProbeNoAnswer}
		idx := map[string]uint64{"a": 100, "b": 100, "c": 100}
		for range rapid.IntRange(1, 40).Draw(rt, "phases") {
			for _, mb := range names {
				k := kinds[rapid.IntRange(0, 3).Draw(rt, "kind")]
				idx[mb] += uint64(rapid.IntRange(0, 20).Draw(rt, "advance"))
				i := idx[mb]
				if k == port.ProbeNoAnswer {
					c.set(mb, nil)
				} else {
					c.set(mb, func() port.ProbeResult { return port.ProbeResult{Health: k, Applied: i} })
				}
			}
			d := time.Duration(rapid.IntRange(1, 300).Draw(rt, "tens of ms")) * 10 * time.Millisecond
			c.run(d)
			per := map[string]int{}
			for _, f := range c.inflight {
				per[f.p.Member]++
			}
			for mb, k := range per {
				if k > 1 {
					rt.Fatalf("%d probes in flight to %s", k, mb)
				}
			}
		}
	})
}
