// Package watch is the proxy's watch fan-out: a pure state machine that
// merges client watchers on the same key range into one upstream etcd
// watcher and hands every client exactly the stream a direct etcd watch
// would give it.
//
// The machine is driven the way etcd's raft RawNode is: the caller feeds it
// inputs (client requests, upstream responses, answers to revision fetches,
// bytes written to a client, clock ticks) and collects what must be done
// with Ready: responses to send to client streams, requests to send on the
// upstream watch streams, and revision fetches (a linearizable Range with
// the client's token) to run. It never blocks, starts no goroutine, does no
// I/O and reads no clock: time arrives with Tick. The same inputs in the
// same order give the same outputs.
//
// Guarantees to each client watcher, as etcd documents them:
//
//   - created carries the store revision at creation: each create is
//     answered only after a fresh linearizable read of the revision (which
//     also checks the client's permission on the range, with its token), and
//     a watch without a start revision receives every event after that
//     revision and none before.
//   - Events are ordered, unique and without gaps from the start revision
//     on; all events of one revision arrive in one response (or one fragment
//     sequence, for watchers that asked for fragments).
//   - A cancel response carries a revision no smaller than any event
//     delivered on the watch, and nothing follows it for that watch ID.
//   - A start revision older than etcd's compaction gets etcd's own
//     compaction response, relayed from an upstream watch.
//   - RequestProgress is answered at a revision R only once every event up
//     to R has been delivered to every watcher on the stream, and R is at
//     least the store revision when the request arrived. Unlike etcd, which
//     drops a request that comes while a watcher is behind (and says
//     nothing to a stream without watchers), the proxy answers every
//     request as soon as its answer is true.
//
// Coalescing: all watchers on one exact key range share one upstream watch
// (a group) on the shared upstream stream. A watcher whose next revision
// lies within the group's history window (a bounded record of the group's
// most recent events) joins it and is replayed the window from its next
// revision. A watcher that asked for an older start revision (not
// compacted) rewinds the group: the group's upstream watch is reopened from
// that revision and the events older than the window are collected in
// front of it, so any number of such watchers cost one upstream watch. A
// watcher that falls behind the window for any other reason (a slow
// stream, a fetch answered late) gets an upstream watch of its own on the
// second upstream stream, and moves into the group once the window reaches
// back to it. etcd answers a stream's progress request only when every
// watch on it is synced, so a catching-up watch on the shared stream delays
// progress answers for the groups; the machine asks again every
// RetryInterval until one comes. An upstream progress answer speaks for a
// watch only if its request went out after etcd confirmed the watch.
//
// Slow clients: the bytes queued for each client stream are bounded. A
// stream over its bound stops receiving; its watchers keep their place
// (their next revision) and resume from the group's window, or from an
// upstream watch of their own, once the stream has drained. Nothing is
// dropped; only a watcher whose place etcd has compacted away is
// cancelled, with etcd's compaction response.
//
// The simulation in package sim checks these guarantees against a model of
// etcd under generated schedules.
package watch
