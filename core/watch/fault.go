//go:build !simfaults

package watch

// fault reports whether the simulation's mutation test has switched on the
// named fault. In every normal build it is constantly false and compiles
// away; see fault_sim.go, built only with the simfaults tag.
func fault(string) bool { return false }
