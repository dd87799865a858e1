package main

import (
	"fmt"
	"math"
	"strings"
)

// The suite's targets, in the table's column order. ceiling is a section's
// own bare gRPC server (for unary calls, a forwarder that relays request
// and response bytes undecoded; see forwarder.go): what gRPC alone
// allows a proxy on this machine.
var allTargets = []string{"direct", "grpc-proxy", "etcdproxy", "ceiling"}

// A figure is one measured quantity of a section, per target.
type figure struct {
	section, name string
	format        string // fmt verb for the values, e.g. "%.0f"
	higherBetter  bool
	values        map[string]float64 // by target; missing: not measured
}

// results collects figures in the order they were measured.
type results struct{ figs []*figure }

// set records value for target under section/name, creating the figure.
func (r *results) set(section, name, format string, higherBetter bool, target string, value float64) {
	for _, f := range r.figs {
		if f.section == section && f.name == name {
			f.values[target] = value
			return
		}
	}
	r.figs = append(r.figs, &figure{section: section, name: name, format: format, higherBetter: higherBetter,
		values: map[string]float64{target: value}})
}

// ratio is a/b as "1.23×", or "" when either is missing or infinite (a
// figure that never happened, e.g. a write never seen) or b is 0.
func ratio(f *figure, a, b string) string {
	va, okA := f.values[a]
	vb, okB := f.values[b]
	if !okA || !okB || vb == 0 || math.IsNaN(va) || math.IsNaN(vb) || math.IsInf(va, 0) || math.IsInf(vb, 0) {
		return ""
	}
	return fmt.Sprintf("%.2f×", va/vb)
}

// markdown renders every figure as one table: a row per figure, a column
// per target, then etcdproxy's ratios to etcd's proxy, to direct etcd and
// to the ceiling. Whether higher is better is marked in the figure's name.
func (r *results) markdown() string {
	var b strings.Builder
	b.WriteString("| section | figure | direct | grpc-proxy | etcdproxy | ceiling | etcdproxy ÷ grpc-proxy | etcdproxy ÷ direct | etcdproxy ÷ ceiling |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, f := range r.figs {
		better := "↓"
		if f.higherBetter {
			better = "↑"
		}
		fmt.Fprintf(&b, "| %s | %s %s |", f.section, f.name, better)
		for _, t := range allTargets {
			if v, ok := f.values[t]; ok {
				fmt.Fprintf(&b, " "+f.format+" |", v)
			} else {
				b.WriteString(" – |")
			}
		}
		fmt.Fprintf(&b, " %s | %s | %s |\n", ratio(f, "etcdproxy", "grpc-proxy"), ratio(f, "etcdproxy", "direct"), ratio(f, "etcdproxy", "ceiling"))
	}
	return b.String()
}
