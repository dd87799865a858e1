//go:build simfaults

package simfault

import "os"

// name is the fault the mutation test switched on (SIM_MUTANT). This file
// is compiled only with the simfaults build tag, by the simulation's
// mutation test, and never into the proxy.
var name = os.Getenv("SIM_MUTANT")

// On reports whether the named fault is switched on.
func On(fault string) bool { return name == fault }
