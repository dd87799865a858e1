package failover

import (
	"fmt"
	"slices"
	"time"

	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/simfault"
)

// Config sets the machine's bounds.
type Config struct {
	// Timeout is the detection bound: how long a probe may go unanswered,
	// the member in use may report no leader, or fall behind, before the
	// proxy moves to another member.
	Timeout time.Duration
	// ProbeInterval is how often each member is probed (default Timeout/4).
	ProbeInterval time.Duration
	// Recovery is how long a member that was left must stay healthy before
	// it may be chosen again (default 5 × Timeout).
	Recovery time.Duration
}

// DefaultTimeout is the detection bound unless configured.
const DefaultTimeout = time.Second

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = c.Timeout / 4
	}
	if c.Recovery <= 0 {
		c.Recovery = 5 * c.Timeout
	}
	return c
}

// Reasons for a switch.
const (
	ReasonStart       = "start"
	ReasonSilent      = "silent"
	ReasonUnreachable = "unreachable"
	ReasonNoLeader    = "no leader"
	ReasonBehind      = "behind"
	ReasonRemoved     = "removed"
)

// Reasons lists every reason a switch can give, for metrics.
var Reasons = []string{ReasonStart, ReasonSilent, ReasonUnreachable, ReasonNoLeader, ReasonBehind, ReasonRemoved}

// Machine is the failover machine. It is not safe for concurrent use.
type Machine struct {
	cfg     Config
	out     *port.Outbox
	now     time.Time
	members []*member // in endpoint order
	cur     *member
	front   frontier
	seq     uint64

	switches map[string]int64 // by reason
	answered int64            // probe answers taken
	stuck    string           // why the member in use failed while no other was healthy
}

// New returns a machine that starts on the first of endpoints.
func New(cfg Config, out *port.Outbox, endpoints []string, now time.Time) *Machine {
	m := &Machine{cfg: cfg.withDefaults(), out: out, now: now, switches: map[string]int64{}}
	m.SetMembers(endpoints)
	return m
}

// Member returns the member in use ("" when there is none).
func (m *Machine) Member() string {
	if m.cur == nil {
		return ""
	}
	return m.cur.addr
}

// SetMembers replaces the member list (the configured endpoints, or the
// cluster's as auto-sync found them). What the machine knew of members that
// stay is kept. When the member in use is gone, the machine moves to the
// healthiest of the rest.
func (m *Machine) SetMembers(endpoints []string) {
	old := map[string]*member{}
	for _, mb := range m.members {
		old[mb.addr] = mb
	}
	m.members = m.members[:0]
	for _, ep := range endpoints {
		if ep == "" || slices.ContainsFunc(m.members, func(mb *member) bool { return mb.addr == ep }) {
			continue
		}
		mb := old[ep]
		if mb == nil {
			mb = &member{addr: ep}
		}
		m.members = append(m.members, mb)
	}
	if m.cur != nil && old[m.cur.addr] != nil && slices.Contains(m.members, m.cur) {
		m.probe()
		return
	}
	prev, reason := "", ReasonStart
	if m.cur != nil {
		prev, reason = m.cur.addr, ReasonRemoved
	}
	m.cur = nil
	if t := m.target(nil); t != nil {
		m.use(prev, t, reason)
	} else if len(m.members) > 0 {
		m.use(prev, m.members[0], reason)
	}
	m.probe()
}

// Tick tells the machine the time: due probes go out and the member in use
// is judged.
func (m *Machine) Tick(now time.Time) {
	m.now = now
	m.probe()
	m.judge()
}

// Probed takes a probe's answer.
func (m *Machine) Probed(member string, seq uint64, r port.ProbeResult) {
	mb := m.find(member)
	if mb == nil || !mb.outstanding || mb.seq != seq {
		return // a member since removed, or an answer given up on
	}
	mb.answer(m.now, r)
	m.answered++
	if r.Health == port.ProbeHealthy && r.Applied > 0 {
		m.front.observe(m.now, r.Applied, m.cfg.Timeout)
	}
	m.judge()
	m.probe()
}

// Suspect hears that the connection to the member in use dropped: it is
// probed at once rather than at its next turn, so that a member that went
// away is left within a probe's round trip, and one that only reset a
// connection is kept.
func (m *Machine) Suspect() {
	if m.cur != nil && !m.cur.outstanding {
		m.cur.sentAt = time.Time{}
		m.probe()
	}
}

func (m *Machine) find(addr string) *member {
	for _, mb := range m.members {
		if mb.addr == addr {
			return mb
		}
	}
	return nil
}

// probe sends the probes that are due: one per member at most in flight,
// each ProbeInterval after the last; a probe unanswered for Timeout is
// given up on (the member counts as silent) and the next one goes out.
func (m *Machine) probe() {
	for _, mb := range m.members {
		if mb.outstanding && m.now.Sub(mb.sentAt) >= m.cfg.Timeout {
			mb.giveUp()
		}
		if mb.outstanding || (!mb.sentAt.IsZero() && m.now.Sub(mb.sentAt) < m.cfg.ProbeInterval) {
			continue
		}
		m.seq++
		mb.outstanding, mb.seq, mb.sentAt = true, m.seq, m.now
		m.out.Probe(port.Probe{Member: mb.addr, Seq: m.seq})
	}
}

// judge leaves the member in use if it failed and a healthy member is
// there to take over.
func (m *Machine) judge() {
	if m.cur == nil {
		return
	}
	reason := m.failed(m.cur)
	if reason == "" {
		m.stuck = ""
		if first := m.members[0]; simfault.On("fail-back") && m.cur != first && first.health == port.ProbeHealthy {
			m.cur.leftAt = m.now
			m.use(m.cur.addr, first, ReasonStart)
		}
		return
	}
	t := m.target(m.cur)
	if t == nil {
		m.stuck = reason
		return
	}
	m.stuck = ""
	m.cur.leftAt = m.now
	m.use(m.cur.addr, t, reason)
}

func (m *Machine) use(from string, t *member, reason string) {
	m.cur = t
	m.switches[reason]++
	m.out.Switch(port.Switch{From: from, To: t.addr, Reason: reason})
}

// failed says why the member in use must be left, or "".
func (m *Machine) failed(mb *member) string {
	switch {
	case mb.health == port.ProbeUnreachable:
		return ReasonUnreachable
	case mb.silent(m.now, m.cfg.Timeout) && !simfault.On("ignore-silence"):
		return ReasonSilent
	case mb.health == port.ProbeNoLeader && m.now.Sub(mb.leaderlessSince) >= m.cfg.Timeout:
		return ReasonNoLeader
	case m.front.lag(mb) >= m.cfg.Timeout && !simfault.On("ignore-behind"):
		return ReasonBehind
	}
	return ""
}

// target is the healthy member to move to, other than skip: the one
// furthest ahead, the earlier endpoint on a tie; nil when none is healthy.
func (m *Machine) target(skip *member) *member {
	var best *member
	for _, mb := range m.members {
		if mb == skip || !m.healthy(mb) {
			continue
		}
		if best == nil || mb.applied > best.applied {
			best = mb
		}
	}
	return best
}

// healthy: the last probe was answered in time with a leader, the member
// is not behind, and a member left before has been healthy for Recovery.
func (m *Machine) healthy(mb *member) bool {
	if mb.health != port.ProbeHealthy || mb.silent(m.now, m.cfg.Timeout) || m.front.lag(mb) >= m.cfg.Timeout/2 {
		return false
	}
	return mb.leftAt.IsZero() || m.now.Sub(mb.healthySince) >= m.cfg.Recovery
}

// Leaderless reports since when the member in use has reported no leader
// without a break (false when it has one, or was not heard from).
func (m *Machine) Leaderless() (time.Time, bool) {
	if m.cur == nil || m.cur.health != port.ProbeNoLeader {
		return time.Time{}, false
	}
	return m.cur.leaderlessSince, true
}

// Stats are the machine's counters and state.
type Stats struct {
	Member   string           // the member in use
	Switches map[string]int64 // switches by reason (a copy)
	Healthy  int              // members healthy now
	Members  int              // members known
	Stuck    string           // why the member in use failed while none other was healthy
	Answered int64            // probe answers taken
}

// Stats returns the counters and state.
func (m *Machine) Stats() Stats {
	s := Stats{Member: m.Member(), Switches: map[string]int64{}, Members: len(m.members), Stuck: m.stuck, Answered: m.answered}
	for r, n := range m.switches {
		s.Switches[r] = n
	}
	for _, mb := range m.members {
		if m.healthy(mb) {
			s.Healthy++
		}
	}
	return s
}

// String describes every member's state, for tests and debugging.
func (m *Machine) String() string {
	s := ""
	for _, mb := range m.members {
		mark := " "
		if mb == m.cur {
			mark = "*"
		}
		s += fmt.Sprintf("%s%s %v applied=%d lag=%v; ", mark, mb.addr, mb.health, mb.applied, m.front.lag(mb))
	}
	return s
}
