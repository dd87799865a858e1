// Package port is where the core meets the shell: the names of client
// streams and upstream streams, the outputs the machines produce (responses
// for client streams, requests for upstream streams, revision fetches), and
// the two mechanisms every machine shares, which the composite node owns
// once for all of them:
//
//   - Flow control per client stream: every response handed out counts
//     against its stream's bound (StreamBufferBytes) until the shell reports
//     it written. A stream over its bound is held: machines stop queueing
//     for it and resume it once it has drained below half the bound. The
//     bytes queued for one client therefore never exceed the bound plus
//     one machine step's worth of responses.
//   - Revision fetches: a linearizable Range that tells a machine the
//     store's current revision (and, with a client's token, whether the
//     client may read a range). Requests for the plain current revision made
//     in one step share one fetch, whichever machines asked; the answer
//     goes to every machine tagged on it. A fetch that fails for a
//     transport reason is retried after RetryInterval without the machines
//     hearing of it; etcd's own verdicts (permission denied, compacted,
//     future revision) go to the machines.
//
// An Outbox holds what the machines produced since the last Advance. It is
// pure data: no goroutine, channel, lock, I/O or clock; time arrives with
// Tick.
package port
