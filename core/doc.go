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
//
// The watch fan-out, lease keep-alive coalescing and read cache state
// machines join this tree as they are built; the network shell (package
// shell) feeds them inputs and executes their outputs.
package core
