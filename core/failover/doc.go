// Package failover is the machine that chooses the etcd member the proxy
// sends everything to, and leaves it when it fails in a way a broken
// connection does not show.
//
// The machine probes every member (the shell runs each probe as etcd's
// Status call with the require-leader flag and a deadline) and judges the
// member in use from the answers:
//
//   - silent: a probe went unanswered for Config.Timeout (a host or a
//     network path died, nothing was reset);
//   - unreachable: the connection was refused or broke;
//   - no leader: the member reported no raft leader for Config.Timeout
//     (it is cut off from its peers, or the cluster has no quorum);
//   - behind: the member's applied raft index is more than Config.Timeout
//     behind the most advanced member's (it is falling behind while its
//     client port stays open).
//
// When the member in use fails one of these, the machine switches to the
// healthy member that is furthest ahead (ties go to the earlier endpoint).
// A member is healthy when its last probe was answered in time with a
// leader and it is not behind. The machine guarantees:
//
//   - It never switches to a member that is not healthy, so when the whole
//     cluster is down or leaderless it stays where it is.
//   - It never leaves a healthy member in use for a better one: a member
//     that comes back is not switched to while the one in use works.
//   - A member it left is not chosen again until it has been healthy for
//     Config.Recovery without a break, so a flapping member is not switched
//     to and away from in a loop.
//   - Every switch is reported once, with the member left, the member
//     chosen and the reason.
//
// Like every core machine it is deterministic: time comes in with Tick and
// every input, nothing runs on its own.
package failover
