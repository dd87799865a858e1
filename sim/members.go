package sim

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdproxy/etcdproxy/core/failover"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// MemberFault is how a simulated etcd member fails.
type MemberFault int

const (
	// Healthy: the member answers, has a leader and keeps up.
	Healthy MemberFault = iota
	// Silent: nothing comes back from it, and nothing breaks (its host or
	// the network path died): no probe answer, no response on its
	// streams, no fetch answer.
	Silent
	// Behind: it answers and has a leader but stopped applying: its
	// streams serve the store as it was, and the cluster moves on.
	Behind
	// Leaderless: cut off from its peers: no leader, the store as it was.
	Leaderless
)

func (f MemberFault) String() string {
	return [...]string{"healthy", "silent", "behind", "leaderless"}[f]
}

// Member is one simulated etcd member: what it is now, and since when it
// has been healthy.
type Member struct {
	Name  string
	Fault MemberFault
	view  View      // the store as it was when it failed
	since time.Time // healthy since
	// leaderless is when it was last seen without a leader.
	leaderless time.Time
}

// Members are the names the world's members go by, for node.Config.
func Members(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("m%d", i)
	}
	return names
}

// member finds a member by name.
func (w *World) member(name string) *Member {
	for _, m := range w.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// InUse is the member the node chose.
func (w *World) InUse() *Member { return w.inUse }

// Fail makes member m fail: from now on it serves the store as it is now
// (Behind, Leaderless), or nothing (Silent).
func (w *World) Fail(m *Member, f MemberFault) {
	if m.Fault == Leaderless {
		m.leaderless = w.Clock.Now()
	}
	m.Fault = f
	m.view = View{Rev: w.Store.Rev, Compacted: w.Store.Compacted, Silent: f == Silent}
	w.applyView()
	if m == w.inUse {
		w.processKeepAlives() // a silent member that only fell behind serves them again
	}
}

// Heal makes member m healthy again; a stale one catches up at once.
func (w *World) Heal(m *Member) {
	if m.Fault == Healthy {
		return
	}
	if m.Fault == Leaderless {
		m.leaderless = w.Clock.Now()
	}
	m.Fault = Healthy
	m.since = w.Clock.Now()
	w.applyView()
	if m == w.inUse {
		w.processKeepAlives() // what waited on the keep-alive stream
	}
}

// applyView points the upstream streams at the member in use's view.
func (w *World) applyView() {
	var v *View
	if m := w.inUse; m != nil && m.Fault != Healthy {
		cp := m.view
		v = &cp
	}
	for _, u := range w.UpIDs() {
		w.Up[u].View = v
	}
	w.noteReachability()
}

// answerProbes answers the probes the node asked for, as each member can
// now: a silent member never answers (the node gives up on its own clock).
// The probes the node sends on hearing an answer are answered too, at the
// same moment: a member that answers does so within a round trip, not at
// the world's next tick, which may be as long as the node's timeout.
func (w *World) answerProbes() {
	for range 10 {
		if len(w.probes) == 0 {
			return
		}
		w.answerProbesOnce()
	}
}

func (w *World) answerProbesOnce() {
	probes := w.probes
	w.probes = nil
	for _, p := range probes {
		m := w.member(p.Member)
		if m == nil {
			continue
		}
		var r port.ProbeResult
		switch m.Fault {
		case Healthy:
			r = port.ProbeResult{Health: port.ProbeHealthy, Applied: uint64(w.Store.Rev), Revision: w.Store.Rev}
		case Behind:
			r = port.ProbeResult{Health: port.ProbeHealthy, Applied: uint64(m.view.Rev), Revision: m.view.Rev}
		case Leaderless:
			r = port.ProbeResult{Health: port.ProbeNoLeader, Revision: m.view.Rev}
		default:
			continue
		}
		w.step(node.Probed{Member: p.Member, Seq: p.Seq, Result: r})
	}
}

// switchTo carries out the node's switch as the shell does: the streams on
// the member left break, and reopen on the new one. A member that has been
// healthy for longer than twice the node's detection bound (plus the last
// tick's step) must not be left.
func (w *World) switchTo(sw port.Switch) {
	to := w.member(sw.To)
	if to == nil {
		w.violate("switch to %q, no member", sw.To)
		return
	}
	from := w.inUse
	w.inUse = to
	if from == nil {
		w.applyView()
		return
	}
	w.moves++
	bound := w.Cfg.Failover.Timeout
	if bound == 0 {
		bound = failover.DefaultTimeout
	}
	// The node judges on its clock's ticks: a probe sent before the member
	// healed is given up on at the first tick after the bound.
	if from.Fault == Healthy && w.Clock.Now().Sub(from.since) > 2*bound+w.lastTick {
		w.violate("switched from %s, healthy for %v, to %s (%s)", from.Name, w.Clock.Now().Sub(from.since), sw.To, sw.Reason)
	}
	switch sw.Reason {
	case failover.ReasonSilent:
		w.Coverage.MovedSilent++
	case failover.ReasonBehind:
		w.Coverage.MovedBehind++
	case failover.ReasonNoLeader:
		w.Coverage.MovedNoLeader++
	}
	w.applyView()
	for _, u := range w.UpIDs() {
		w.Lose(u)
	}
	w.LoseKeepAlive()
}

// inUseServes reports whether the member in use serves the cluster's
// store as it is: healthy, or stale with nothing written since.
func (w *World) inUseServes() bool {
	m := w.inUse
	return m == nil || m.Fault == Healthy || (m.Fault == Behind && m.view.Rev == w.Store.Rev)
}

// canMove reports whether a member other than the one in use is healthy.
func (w *World) canMove() bool {
	for _, m := range w.Members {
		if m != w.inUse && m.Fault == Healthy {
			return true
		}
	}
	return false
}

// ended takes the node's end of a client stream: only a stream that asked
// for a leader is ended, with etcd's "no leader", and only while the member
// in use has none (or had none until a tick ago: the node judges on the
// probes of the last tick).
func (w *World) ended(e port.End) {
	c := w.Clients[e.Stream]
	if c == nil {
		w.violate("stream %d ended, no such stream", e.Stream)
		return
	}
	if w.tokenEnded(c, e.Err) {
		c.Closed, c.Ended = true, e.Err
		w.Coverage.AuthEnded++
		return
	}
	m := w.inUse
	switch {
	case !c.RequireLeader:
		w.violate("stream %d ended (%v), though it did not ask for a leader", e.Stream, e.Err)
	case !errors.Is(e.Err, rpctypes.ErrGRPCNoLeader):
		w.violate("stream %d ended with %v, not etcd's no leader", e.Stream, e.Err)
	case m == nil || (m.Fault != Leaderless && (m.leaderless.IsZero() || w.Clock.Now().Sub(m.leaderless) > 2*time.Second)):
		w.violate("stream %d ended for no leader, but member %v has one", e.Stream, m)
	}
	c.Closed, c.Ended = true, e.Err
	w.Coverage.LeaderlessEnded++
}
