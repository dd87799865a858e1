// Package lease is the keep-alive coalescing machine: every client
// LeaseKeepAlive stream the proxy serves shares one upstream keep-alive
// stream to etcd, and a lease kept alive from many streams, many times a
// second, is refreshed on etcd about once per third of its TTL.
//
// Refreshing is driven by the clients' own requests, never by a timer:
//
//   - A keep-alive for a lease the machine has no fresh answer for (the
//     first one, or one more than TTL/3 after the last refresh etcd
//     confirmed) goes to etcd; every request for that lease arriving
//     meanwhile waits for the same answer. A first keep-alive for an
//     unknown lease is therefore forwarded, never guessed.
//   - Otherwise it is answered at once with the TTL etcd would report at
//     that moment: what is left of the TTL since the refresh was sent (so
//     never more than etcd's own figure).
//   - A refresh sent for a request takes along the refreshes of every
//     other lease that has fallen due (last confirmed a third of its TTL
//     ago) and that a client asked for within that third. They would go
//     out alone at each lease's next request; together they reach etcd as
//     a burst, which costs etcd several times less per renewal than a
//     steady trickle of single messages.
//   - So a lease is refreshed only when some client asked for it, at most
//     once per TTL/3, and once its clients stop it expires on etcd no later
//     than TTL + TTL/3 after the last keep-alive a client sent (TTL when
//     it was not taken along).
//
// Guarantees to clients:
//
//   - Every request is answered exactly once, on its own stream, in order
//     per lease. A stream that does not read is held at its byte bound
//     (port.Flow) and owes its answers as counts per lease, so memory stays
//     bounded by the leases it asked for; once it drains, each owed request
//     gets its answer as of that moment.
//   - A lease etcd does not know, or that was revoked, is answered with
//     TTL 0 as etcd answers. A revoke made through the proxy (Revoked)
//     drops the machine's answer at once: the next keep-alive goes to etcd.
//   - When the upstream stream breaks (or the proxy moves to another
//     member), every refresh in flight is sent again on the new stream.
//
// Under a namespace (Config.Namespaced) a client keeps alive only the
// namespace's leases: each lease's ownership is checked once through the
// shell (port.LeaseCheck) and remembered until the lease is gone; another
// namespace's lease is answered TTL 0 and never refreshed (scope.go).
//
// The machine keeps nothing for a lease no client has asked for within its
// TTL, once its last refresh is no longer fresh (looked for once a
// second). It is deterministic: time comes in with Tick and every input.
package lease
