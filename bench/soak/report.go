package main

// The Markdown report.

import (
	"cmp"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"
)

type report struct {
	o         options
	samples   []sample
	fault     *fault
	failovers map[string]float64
	v         verdict
	h         *history
	lost      []*heldLease
	leases    int
	// the control group, kept alive directly against the members
	controlLost   []*heldLease
	controlLeases int
	errs          map[errKey]errCount
	w             *writeLoad
	r             *readLoad
	// selfPeakKB is this process's peak RSS (the load, its records and
	// etcd), 0 if unknown.
	selfPeakKB int64
}

func (r *report) passed() bool {
	return r.v.ok() && len(r.lost) == 0 && r.fault.err == nil
}

func (r *report) markdown() string {
	var b strings.Builder
	o := r.o
	fmt.Fprintf(&b, "# Soak: etcdproxy for %v with a member stopped\n\n", o.duration)
	if o.label != "" {
		b.WriteString(o.label + "\n\n")
	}
	fmt.Fprintf(&b, "- Command: `%s`\n", commandLine())
	fmt.Fprintf(&b, "- Machine: %d CPUs (nproc), %s %s/%s; etcd (3 members, no fsync) runs in the bench's process (peak RSS %s MiB), the proxy in its own.\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, orDash(float64(r.selfPeakKB)/1024, r.selfPeakKB > 0))
	rl := ""
	if o.requireLeader {
		rl = ", with WithRequireLeader"
	}
	prog := "no RequestProgress"
	if o.progress > 0 {
		prog = fmt.Sprintf("RequestProgress every %v on each connection", o.progress)
	}
	fmt.Fprintf(&b, "- Load, through the proxy only, over %d clientv3 connections: %d watchers opening sessions of %v–%v on %d prefixes "+
		"(%.0f%% from an older revision), %s%s; %.0f puts/s; %.0f gets/s (half linearizable, half serializable); "+
		"%d leases of %d s, each with a key, kept alive with clientv3 KeepAlive. Beside it, directly against the members: "+
		"%d control leases kept alive the same way.\n",
		o.conns, o.watchers, o.holdMin, o.holdMax, o.prefixes, 100*o.catchup, prog, rl, o.putRate, o.getRate, o.leases, o.leaseTTL, o.controlLeases)
	b.WriteString("- Fault: " + r.faultLine() + "\n")
	b.WriteString("- etcd watchers: etcd_debugging_mvcc_watcher_total of the three members together (they share the bench's Prometheus registry).\n")

	b.WriteString("\n## Time series\n\n")
	b.WriteString("| t (s) | proxy RSS (MiB) | proxy goroutines | client watches | etcd watchers | client errors | puts/s | watch events/s | proxy CPU (%) | bench+etcd CPU (%) | bench stall (ms) | note |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, s := range r.samples {
		var putRate, evRate, proxyCPU, selfCPU string
		if i > 0 {
			prev := r.samples[i-1]
			// Rates over less than a second (the last sample, taken
			// just after the load stops) would be noise.
			if d := (s.t - prev.t).Seconds(); d >= 1 {
				putRate = fmt.Sprintf("%.0f", float64(s.puts-prev.puts)/d)
				evRate = fmt.Sprintf("%.0f", float64(s.events-prev.events)/d)
				proxyCPU = orDash(100*(s.proxyCPU-prev.proxyCPU)/d, s.proxyCPU >= 0 && prev.proxyCPU >= 0)
				selfCPU = orDash(100*(s.selfCPU-prev.selfCPU)/d, s.selfCPU >= 0 && prev.selfCPU >= 0)
			}
		}
		fmt.Fprintf(&b, "| %.0f | %s | %s | %d | %s | %d | %s | %s | %s | %s | %d | %s |\n", s.t.Seconds(),
			orDash(float64(s.rssKB)/1024, s.rssKB >= 0), orDash(s.goroutines, s.goroutines >= 0),
			s.clientWatchers, orDash(s.etcdWatchers, s.etcdWatchers >= 0), s.errors, putRate, evRate, proxyCPU, selfCPU,
			s.stall.Milliseconds(), s.note)
	}

	v := r.v
	b.WriteString("\n## Totals\n\n| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| watch sessions checked | %d (%d from an older revision, %d watched again after their watch closed on its own, "+
		"%d checked past their last event thanks to a progress notification, %d with nothing to check) |\n",
		v.sessions, v.catchup, v.rewatched, v.progressed, v.empty)
	fmt.Fprintf(&b, "| events checked (etcd's events each session had to receive) | %d |\n", v.expected)
	fmt.Fprintf(&b, "| events received | %d |\n", v.received)
	fmt.Fprintf(&b, "| events lost | %s |\n", mark(v.lost))
	fmt.Fprintf(&b, "| events duplicated | %s |\n", mark(v.duplicated))
	fmt.Fprintf(&b, "| events out of order | %s |\n", mark(v.outOfOrder))
	fmt.Fprintf(&b, "| events not in etcd's history of the session's range | %s |\n", mark(v.foreign))
	fmt.Fprintf(&b, "| events after a progress notification that covered them | %s |\n", mark(v.late))
	fmt.Fprintf(&b, "| events acknowledged before a session (from the newest revision) ended but not yet delivered to it (lag, not loss) | %d in %d sessions, at most %d in one |\n",
		v.behind, v.behindSessions, v.behindMax)
	fmt.Fprintf(&b, "| leases lost | %s of %d |\n", mark(int64(len(r.lost))), r.leases)
	fmt.Fprintf(&b, "| control leases lost (kept alive directly against etcd) | %d of %d |\n", len(r.controlLost), r.controlLeases)
	fmt.Fprintf(&b, "| puts | %d ok, %d failed |\n", r.w.ok.Load(), r.w.failed.Load())
	for k := range readKinds {
		fmt.Fprintf(&b, "| gets, %s | %d ok, %d failed |\n", strings.Trim(strings.TrimPrefix(readKinds[k], "Range "), "()"), r.r.ok[k].Load(), r.r.failed[k].Load())
	}
	fmt.Fprintf(&b, "| etcd's history of the prefixes | %d events, up to revision %d |\n", r.h.total, r.h.last)
	verdict := "**PASS**: no event lost, duplicated or out of order, no lease lost."
	if !r.passed() {
		verdict = "**FAIL**"
		if r.fault.err != nil {
			verdict += ": the fault was not injected"
		}
		if len(r.lost) > 0 && len(r.controlLost) > 0 {
			verdict += fmt.Sprintf(" (the control group, kept alive directly against etcd, lost %d of %d leases too)", len(r.controlLost), r.controlLeases)
		}
	}
	b.WriteString("\n" + verdict + "\n")

	b.WriteString("\n## Client errors, by RPC and kind\n\n")
	if len(r.errs) == 0 {
		b.WriteString("None.\n")
	} else {
		b.WriteString("| RPC | error | count | first (t, s) | last (t, s) |\n|---|---|---|---|---|\n")
		keys := slices.SortedFunc(maps.Keys(r.errs), func(a, b errKey) int {
			return cmp.Or(cmp.Compare(a.rpc, b.rpc), cmp.Compare(r.errs[b].n, r.errs[a].n), cmp.Compare(a.kind, b.kind))
		})
		for _, k := range keys {
			c := r.errs[k]
			fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %.1f |\n", k.rpc, strings.ReplaceAll(k.kind, "|", `\|`), c.n, c.first.Seconds(), c.last.Seconds())
		}
	}

	if v.badCount > 0 {
		fmt.Fprintf(&b, "\n## Failed sessions (%d; the first %d)\n\n", v.badCount, len(v.bad))
		b.WriteString("| watcher | prefix | start rev | last rev | progress rev | older start | re-watches | received | lost (first revs) | duplicated (first revs) | out of order | not in history (first revs) | after progress |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, bs := range v.bad {
			s := bs.s
			fmt.Fprintf(&b, "| %d | %s | %d | %d | %d | %v | %d | %d | %d %v | %d %v | %d | %d %v | %d |\n",
				bs.watcher, prefixKey(s.prefix), s.start, bs.last, s.progress, s.catchup, s.rewatch, len(s.events),
				bs.lost, bs.lostRevs, bs.dup, bs.dupRevs, bs.ooo, bs.foreign, bs.frRevs, s.late)
		}
	}
	if len(r.lost)+len(r.controlLost) > 0 {
		fmt.Fprintf(&b, "\n## Lost leases (%d through the proxy, %d of the control group; the first 10 of each)\n\n", len(r.lost), len(r.controlLost))
		b.WriteString("| lease | key | found lost at (t, s) | keep-alive answers | last answer (t, s) | why |\n|---|---|---|---|---|---|\n")
		for _, l := range slices.Concat(r.lost[:min(10, len(r.lost))], r.controlLost[:min(10, len(r.controlLost))]) {
			why := l.why()
			l.mu.Lock()
			fmt.Fprintf(&b, "| %x | %s | %.1f | %d | %.1f | %s |\n", l.id, l.key, l.lostAt.Seconds(), l.renewed, l.lastAnswer.Seconds(), why)
			l.mu.Unlock()
		}
	}
	b.WriteString(`
- events checked: for each session, etcd's events on its prefix (read from the members directly after the run) from the session's start revision up to the last revision it knows it has: its last event's, or the revision of the last progress notification it got, if higher. The session must have received exactly these, in order, each once.
- leases lost: a lease whose keep-alive channel closed during the run (clientv3 closes it when no answer came for a TTL), or that etcd (asked directly after the load stopped, before the keep-alives ended) no longer knew, or whose key was gone. The control leases are kept alive the same way but directly against the members: losses in both groups point at the cluster (or the machine), not the proxy.
- bench stall: the longest delay, since the previous sample, with which a goroutine of the bench's process woke from a 10 ms sleep. etcd's members run in that process: a stall of a second or more is one of etcd too, and the proxy then sees its member silent.
- client errors: every failed call of the load, including the watches that closed on their own (each watched again from the revision after its last event); failed puts and gets during the fault are expected.
`)
	return b.String()
}

func (r *report) faultLine() string {
	f := r.fault
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return fmt.Sprintf("**not injected**: %v", f.err)
	}
	if f.member == "" {
		return "none (the run ended first)"
	}
	s := fmt.Sprintf("%s, the member the proxy used, stopped (Member.Stop) at t=%s (stopped at %s), restarted at t=%s (serving at %s)",
		f.member, ts(f.stopping), ts(f.stopped), ts(f.restarting), ts(f.restarted))
	if f.inUseAfter != "" {
		s += fmt.Sprintf("; the proxy used %s at the end", f.inUseAfter)
	}
	var fo []string
	for _, k := range slices.Sorted(maps.Keys(r.failovers)) {
		fo = append(fo, fmt.Sprintf("%s %.0f", k, r.failovers[k]))
	}
	if len(fo) == 0 {
		fo = []string{"none"}
	}
	return s + "; proxy failovers (etcdproxy_upstream_failovers_total): " + strings.Join(fo, ", ") + "."
}

func ts(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func orDash(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%.0f", v)
}

func mark(n int64) string {
	if n == 0 {
		return "0"
	}
	return fmt.Sprintf("**%d**", n)
}
