// Package sim is where a user of the proxy convinces themselves that it
// keeps etcd's watch guarantees: `go test ./sim`.
//
// It will hold two levels of property-based simulation (pgregory.net/rapid):
// the deterministic core driven against an in-memory model of etcd's MVCC
// store and watch API under a mock clock, and the whole proxy in-process in
// front of an embedded etcd cluster, with the same schedules applied through
// the proxy and directly to etcd. Every failure prints the seed that replays
// it. The watch fan-out core it checks is not built yet; until then the
// proxy relays each client watch stream to its own upstream stream, which the
// shell's tests compare with direct etcd watches.
package sim
