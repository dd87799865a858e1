//go:build simfaults

package watch

import "os"

// faultName is the fault the mutation test switched on (SIM_MUTANT). This
// file is compiled only with the simfaults build tag, by the simulation's
// mutation test, and never into the proxy.
var faultName = os.Getenv("SIM_MUTANT")

func fault(name string) bool { return faultName == name }
