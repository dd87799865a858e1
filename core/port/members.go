package port

import "fmt"

// Probe asks the shell to check one etcd member's health: etcd's Status
// call on that member, with the require-leader flag, given up after the
// failover machine's timeout. The answer comes back with the same Seq.
type Probe struct {
	Member string
	Seq    uint64
}

func (p Probe) String() string { return fmt.Sprintf("probe %d %s", p.Seq, p.Member) }

// ProbeHealth is what a probe found.
type ProbeHealth uint8

const (
	// ProbeUnknown: no probe answered yet.
	ProbeUnknown ProbeHealth = iota
	// ProbeHealthy: the member answered and has a leader.
	ProbeHealthy
	// ProbeNoLeader: the member answered that it has no leader.
	ProbeNoLeader
	// ProbeUnreachable: the connection was refused or broke.
	ProbeUnreachable
	// ProbeNoAnswer: no answer before the deadline.
	ProbeNoAnswer
)

func (h ProbeHealth) String() string {
	switch h {
	case ProbeHealthy:
		return "healthy"
	case ProbeNoLeader:
		return "no-leader"
	case ProbeUnreachable:
		return "unreachable"
	case ProbeNoAnswer:
		return "no-answer"
	}
	return "unknown"
}

// ProbeResult is a probe's answer. Applied is the member's applied raft
// index (0 when unknown: etcd refused the Status call, as it does for a
// proxy without credentials when auth is on, after the leader check);
// Revision its store's revision.
type ProbeResult struct {
	Health   ProbeHealth
	Applied  uint64
	Revision int64
}

func (r ProbeResult) String() string {
	return fmt.Sprintf("%v applied=%d revision=%d", r.Health, r.Applied, r.Revision)
}

// Switch tells the shell to send everything to member To from now on,
// moving every upstream stream there; From is the member left ("" at
// start) and Reason why.
type Switch struct {
	From, To string
	Reason   string
}

func (s Switch) String() string { return fmt.Sprintf("switch %q -> %q (%s)", s.From, s.To, s.Reason) }

// End tells the shell to end a client stream with Err (a gRPC status
// error); the node has forgotten the stream already.
type End struct {
	Stream StreamID
	Err    error
}

func (e End) String() string { return fmt.Sprintf("end stream %d: %v", e.Stream, e.Err) }
