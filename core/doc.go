// Package core holds the proxy's pure, deterministic parts: code that takes
// data in and hands data back, with no goroutines, channels, mutexes, network
// I/O, wall-clock reads or global randomness. Everything here can be driven
// step by step from a test or a simulation and gives the same output for the
// same input, byte for byte.
//
// Subpackages:
//
//   - node: the composite, the one entry point of the core. Inputs are
//     plain data; it hands out one merged Ready and is acknowledged with
//     Advance, as etcd's raft RawNode is. It owns the machines and what
//     they share.
//   - port: where the core meets the shell: stream and upstream names, the
//     outputs (sends, upstream requests, revision fetches, member probes and
//     switches, stream ends), per-stream flow control and fetch batching.
//   - watch: the watch fan-out machine, which merges client watchers on one
//     key range into one upstream etcd watcher with etcd's exact revision
//     semantics.
//   - lease: the keep-alive coalescing machine: every client keep-alive
//     stream shares one upstream stream, and a lease is refreshed on etcd
//     about once per third of its TTL while clients ask, never after.
//   - failover: the machine that probes every etcd member and chooses the
//     one the proxy uses, leaving it when it goes silent, unreachable,
//     leaderless or behind the cluster, without flapping.
//   - simfault: the switch for the faults planted in the machines for the
//     simulation's mutation test (off in every normal build).
//   - keyspace: the namespace translation (--namespace) between a client's
//     keys and etcd's, with the guarantee that no translated request reaches
//     a key outside the prefix.
//
// The network shell (package shell) runs the node on one event loop, feeds
// it inputs and carries out its outputs. The read cache joins the node as a
// machine of the same shape.
package core
