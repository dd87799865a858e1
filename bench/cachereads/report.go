package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// result is what one target showed.
type result struct {
	target string
	load   string // load average before the target's run
	ser    readResult
	lin    readResult
	fresh  freshResult
}

// cell is one figure of the table: its text, and its value for ratios
// (NaN: no ratio).
type cell struct {
	s string
	v float64
}

func num(format string, v float64) cell { return cell{fmt.Sprintf(format, v), v} }

func text(s string) cell { return cell{s, math.NaN()} }

var none = text("-")

// row is one line of the table: a figure for every target.
type row struct {
	name  string
	ratio bool
	cells func(r result) cell
}

func readRows(kind string, get func(result) readResult) []row {
	ms := func(d time.Duration) cell { return num("%.3f", float64(d)/float64(time.Millisecond)) }
	proxyOnly := func(f func(readResult) cell) func(result) cell {
		return func(r result) cell {
			if r.target == "direct" {
				return none
			}
			return f(get(r))
		}
	}
	counter := func(name string, per float64, format string) func(result) cell {
		return proxyOnly(func(rr readResult) cell {
			v, ok := rr.proxy[name]
			if !ok || rr.reads == 0 {
				return none
			}
			return num(format, per*v/float64(rr.reads))
		})
	}
	rows := []row{
		{kind + ": reads/s", true, func(r result) cell { return num("%.0f", get(r).rate()) }},
		{kind + ": p50 latency, ms", true, func(r result) cell { return ms(get(r).p50) }},
		{kind + ": p99 latency, ms", true, func(r result) cell { return ms(get(r).p99) }},
		{kind + ": reads reaching etcd", true, func(r result) cell { return num("%.2f%%", 100*get(r).etcdFraction()) }},
		{kind + ": proxy cache hits, of reads", false, counter("etcd_grpc_proxy_cache_hits_total", 100, "%.2f%%")},
	}
	if kind == "linearizable" {
		rows = append(rows,
			row{kind + ": consistent cache hits, of reads", false, counter("etcdproxy_cache_consistent_hits_total", 100, "%.2f%%")},
			row{kind + ": revision fetches per 1,000 reads", false, counter("etcdproxy_cache_revision_fetches_total", 1000, "%.1f")})
	}
	rows = append(rows,
		row{kind + ": etcd CPU, s", true, func(r result) cell { return num("%.2f", get(r).etcdCPU) }},
		row{kind + ": proxy CPU, s", true, proxyOnly(func(rr readResult) cell { return num("%.2f", rr.proxyCPU) })},
		row{kind + ": etcd + proxy CPU, ms per 1,000 reads", true, func(r result) cell {
			rr := get(r)
			if rr.reads == 0 {
				return none
			}
			return num("%.1f", 1e6*(rr.etcdCPU+rr.proxyCPU)/float64(rr.reads))
		}},
		row{kind + ": harness CPU, s", true, func(r result) cell { return num("%.2f", get(r).selfCPU) }},
		row{kind + ": errors / wrong answers", false, func(r result) cell { return text(fmt.Sprintf("%d / %d", get(r).errs, get(r).bad)) }},
	)
	return rows
}

func freshRows() []row {
	q := func(p float64) func(result) cell {
		return func(r result) cell {
			d := r.fresh.quantileDur(p)
			if d < 0 || d == never {
				return text(r.fresh.quantile(p))
			}
			return num("%.2f", float64(d)/float64(time.Millisecond))
		}
	}
	return []row{
		{"write-to-fresh: p50, ms", true, q(0.5)},
		{"write-to-fresh: p99, ms", true, q(0.99)},
		{"write-to-fresh: max, ms", true, q(1)},
		{"write-to-fresh: writes seen", false, func(r result) cell {
			return text(fmt.Sprintf("%d / %d", r.fresh.seen(), len(r.fresh.lat)))
		}},
		{"write-to-fresh: monotonic violations", false, func(r result) cell { return text(fmt.Sprint(r.fresh.violations)) }},
		{"write-to-fresh: reader polls/s", true, func(r result) cell { return num("%.0f", r.fresh.pollRate()) }},
	}
}

// ratio is a ÷ b, or "-".
func ratio(a, b cell) string {
	if math.IsNaN(a.v) || math.IsNaN(b.v) || b.v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3g×", a.v/b.v)
}

func markdown(header string, o options, rs []result) string {
	by := map[string]result{}
	var names []string
	for _, r := range rs {
		by[r.target] = r
		names = append(names, r.target)
	}
	// Ratio columns: every proxy to direct, and etcdproxy to grpc-proxy.
	type pair struct{ a, b string }
	var pairs []pair
	if _, ok := by["direct"]; ok {
		for _, n := range names {
			if n != "direct" {
				pairs = append(pairs, pair{n, "direct"})
			}
		}
	}
	_, e := by["etcdproxy"]
	_, g := by["grpc-proxy"]
	if e && g {
		pairs = append(pairs, pair{"etcdproxy", "grpc-proxy"})
	}

	var b strings.Builder
	b.WriteString(header)
	b.WriteString("\n| workload: figure |")
	for _, n := range names {
		fmt.Fprintf(&b, " %s |", n)
	}
	for _, p := range pairs {
		fmt.Fprintf(&b, " %s ÷ %s |", p.a, p.b)
	}
	b.WriteString("\n|---|" + strings.Repeat("--:|", len(names)+len(pairs)) + "\n")
	rows := slices.Concat(
		readRows("serializable", func(r result) readResult { return r.ser }),
		readRows("linearizable", func(r result) readResult { return r.lin }),
		freshRows())
	for _, rw := range rows {
		fmt.Fprintf(&b, "| %s |", rw.name)
		cells := map[string]cell{}
		for _, n := range names {
			c := rw.cells(by[n])
			cells[n] = c
			fmt.Fprintf(&b, " %s |", c.s)
		}
		for _, p := range pairs {
			s := "-"
			if rw.ratio {
				s = ratio(cells[p.a], cells[p.b])
			}
			fmt.Fprintf(&b, " %s |", s)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, `
Legend: the targets one after another on the same etcd member; each proxy started before its workloads (its cache cold) and killed after them.
serializable / linearizable: %d goroutines over %d gRPC connections to the target each read a random one of %d hot keys (values of %d bytes, written before the run) in a tight loop; %v warm-up, then %v measured.
Figures are over the measured window: reads/s and latency of the reads answered in it; reads reaching etcd: Range calls etcd handled (grpc_server_handled_total{grpc_method="Range"} on its /metrics) per read answered (a proxy's own Range calls, e.g. etcdproxy's revision fetches, count);
proxy cache hits: etcd_grpc_proxy_cache_hits_total on the proxy's /proxy/metrics per read (grpc-proxy only caches serializable reads); consistent cache hits and revision fetches: etcdproxy_cache_consistent_hits_total and etcdproxy_cache_revision_fetches_total, likewise, etcdproxy only.
The counters and CPU times are read at each end of the window with the load paused (no read in flight), so the reads counted are exactly those made between the two readings;
CPU: utime+stime from /proc/<pid>/stat of etcd, the proxy and this harness (the client side of the load, which shares the machine's CPUs).
write-to-fresh: %d Puts of new values of one key directly on etcd, one every %v, while one goroutine polls the key through the target, serializable, in a tight loop; for each Put, the time from its return until the poller first got that value or a later one
(a write seen before its Put returned counts as 0; "never": not seen within %v after the last Put; quantiles count unseen writes as infinite). Monotonic violations: polls that returned a value older than one the poller had already got.
Ratios are of the figures as printed (latencies and CPU: lower is better).
`, o.clients, o.conns, o.keys, o.valueBytes, o.warmup, o.duration, o.writes, o.writeInterval, o.freshTimeout)
	b.WriteString("\nNotes:\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- %s: load average before %s; write-to-fresh: %d writes seen before their Put returned, %d polls with a header revision below one already seen, %d poll errors",
			r.target, r.load, r.fresh.early, r.fresh.revRegress, r.fresh.errs)
		var ex []string
		for _, rr := range []readResult{r.ser, r.lin} {
			ex = append(ex, rr.examples...)
		}
		if r.fresh.example != "" {
			ex = append(ex, r.fresh.example)
		}
		if len(ex) > 0 {
			fmt.Fprintf(&b, "; e.g. %s", strings.Join(ex, "; "))
		}
		b.WriteString(".\n")
	}
	return b.String()
}
