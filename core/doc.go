// Package core holds the proxy's pure, deterministic parts: code that takes
// data in and hands data back, with no goroutines, channels, mutexes, network
// I/O, wall-clock reads or global randomness. Everything here can be driven
// step by step from a test or a simulation and gives the same output for the
// same input, byte for byte.
//
// Subpackages:
//
//   - keyspace: the namespace translation (--namespace) between a client's
//     keys and etcd's, with the guarantee that no translated request reaches
//     a key outside the prefix.
//   - watch: the watch fan-out state machine, which merges client watchers
//     on one key range into one upstream etcd watcher with etcd's exact
//     revision semantics.
//
// The network shell (package shell) feeds the machines inputs from one
// event loop and executes their outputs. Lease keep-alive coalescing and
// the read cache will join this tree as machines of the same shape.
package core
