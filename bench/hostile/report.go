package main

import (
	"fmt"
	"strings"
	"time"
)

// markdown renders the results: one table per target, a row per phase.
func markdown(header string, results []targetResult) string {
	var b strings.Builder
	b.WriteString(header + "\n")
	b.WriteString("RSS, Go heap (allocated and not yet freed) and goroutines are the target's (etcd's own for direct), measured at the end of the phase while its hostile clients were still there; peak is the highest resident memory during the phase. In the last phase, the heap is read after two forced collections (pprof's heap?gc=1). The canary's latency is from a Put's return (made directly on etcd) to its event's arrival through the target.\n\n")
	for _, r := range results {
		fmt.Fprintf(&b, "### %s\n\n", r.target)
		b.WriteString("| phase | hostile clients got | RSS MiB (peak) | heap MiB | goroutines | etcd peak MiB | etcd watchers | canary writes | canary p50 / p99 ms | canary lost |\n")
		b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, p := range r.phases {
			outcome := p.outcome
			if outcome == "" {
				outcome = "–"
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f (%.0f) | %s | %s | %.0f | %s | %d | %s / %s | %d |\n",
				p.name, outcome, mib(p.rssKB), mib(p.peakKB), count(p.heapMiB), count(p.goroutines), mib(p.etcdPeakKB), count(p.etcdWatchers),
				p.canary.writes, ms(p.canary.p50), ms(p.canary.p99), p.canary.lost)
		}
		fmt.Fprintf(&b, "\nCanary: %d events lost, %d duplicated or out of order", r.canaryLost, r.canaryDup)
		if r.canaryErr != nil {
			fmt.Fprintf(&b, ", watch error: %v", r.canaryErr)
		}
		b.WriteString(".\n\n")
	}
	return b.String()
}

func mib(kb int64) float64 { return float64(kb) / 1024 }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func count(v float64) string {
	if v < 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f", v)
}
