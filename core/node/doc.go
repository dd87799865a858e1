// Package node is the proxy's core as one state machine: the composite of
// the machines (the watch fan-out, lease keep-alive coalescing, the
// failover machine that chooses the etcd member in use, and the read
// cache), driven the way etcd's raft RawNode is.
//
//   - Inputs are plain data (Input: client requests and reads, upstream
//     responses, answers to revision fetches and member probes, etcd's
//     responses for the read cache, bytes written, clock ticks), printable
//     and replayable: the same inputs in the same order give the same
//     outputs, byte for byte.
//   - Step feeds one input; Tick is Step(Tick{now}).
//   - HasReady tells whether there is anything to do; Ready hands out what
//     is pending (responses for client streams, requests for upstream
//     streams, revision fetches and member probes to run, switches of the
//     member in use, client streams to end, the read cache's answers) and
//     changes nothing.
//   - Advance acknowledges the Ready: the caller has carried it out (the
//     next step reuses its slices). A Written input later reports the bytes
//     of client responses actually written, which is what releases a
//     stream's flow control.
//
// The node owns what the machines share: the client streams (one ID space
// for every kind of stream, named by the shell's loop from one counter and
// registered here, and their per-stream flow control) and the revision
// fetches (a fetch is tagged with the machines that asked, and plain
// current-revision fetches made in one step are one fetch for all of them).
// It also keeps etcd's require-leader promise for client streams that ask
// for it: while the member in use reports no leader such a stream is
// refused, and once it has had none for LeaderlessStreamEnd (the failover
// machine found no member with a leader to move to) it is ended, with
// etcd's "no leader" error. The read cache is fed by a subscription of the
// node's own: an internal stream the watch machine serves like a client's
// (see cache.go). It starts no goroutine, does no I/O,
// reads no clock and takes no lock; the shell runs it on one loop goroutine,
// and the simulation drives it step by step.
package node
