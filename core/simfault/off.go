//go:build !simfaults

// Package simfault switches on one planted fault in the core's machines,
// for the simulation's mutation test: each machine asks On(name) where a
// fault would break one of its guarantees. In every normal build On is
// constantly false and compiles away; on.go, built only with the simfaults
// tag, reads the fault's name from SIM_MUTANT.
package simfault

// On reports whether the named fault is switched on.
func On(string) bool { return false }
