package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// timeline is when the fault began and ended, and when the load stopped.
type timeline struct {
	fault, heal, stop, end time.Duration
}

// histEvent is one event of etcd's own history, read from a healthy
// member.
type histEvent struct {
	rev int64
	key string
}

// result is what one target showed in one scenario.
type result struct {
	scenario, target string

	putsOK, putsFailed int
	committedFailed    int // failed puts that etcd committed all the same
	unknownAcked       int // acknowledged puts missing from etcd's history (a bench bug)

	outage     time.Duration // longest run of failed puts
	outageOpen bool          // no put succeeded after it
	outageFrom time.Duration // its start, relative to the fault
	outageTo   time.Duration // its end, relative to the heal

	failedFrom, failedTo time.Duration // first failed put's start (to the fault), last one's end (to the heal)

	watch, leaderWatch watchResult

	staleness            time.Duration // max serializable staleness
	readsOK, readsFailed int
	readOutage           time.Duration // longest run of failed reads (JSON only)
	readOutageOpen       bool          // no read succeeded after it
}

type watchResult struct {
	stall      time.Duration
	stallNever bool // some acknowledged put never arrived: stall runs to the end
	verdict    string
	errors     string
	diff       eventDiff // the events compared with etcd's history
	nerrs      int       // errors the watch saw
	restarts   int       // times it watched again
}

// ackedPuts are the writer's acknowledged puts.
func ackedPuts(w *writer) []put {
	var out []put
	for _, p := range w.puts {
		if p.rev > 0 {
			out = append(out, p)
		}
	}
	return out
}

// analyze measures one target from its writer, watchers and reader, etcd's
// history of its prefix, and every put acknowledged by any writer of the
// run (the clock of the cluster's progress that reads are measured
// against).
func analyze(scenario, target string, w *writer, watchers [2]*watcher, r *reader, hist []histEvent, acked []put, tl timeline) result {
	res := result{scenario: scenario, target: target, failedTo: -tl.heal}
	puts := slices.Clone(w.puts)
	slices.SortFunc(puts, func(a, b put) int { return strings.Compare(a.key, b.key) }) // issue order

	inHist := make(map[string]int64, len(hist))
	for _, e := range hist {
		inHist[e.key] = e.rev
	}
	for _, p := range puts {
		if p.rev > 0 {
			res.putsOK++
			if inHist[p.key] != p.rev {
				res.unknownAcked++
			}
		} else {
			if res.putsFailed == 0 {
				res.failedFrom = p.start - tl.fault
			}
			res.failedTo = max(res.failedTo, p.end-tl.heal)
			res.putsFailed++
			if _, ok := inHist[p.key]; ok {
				res.committedFailed++
			}
		}
	}

	// Outage: the longest run of consecutive failed puts, in issue order,
	// from the start of its first put to the end of the next successful one.
	for i := 0; i < len(puts); {
		if puts[i].rev > 0 {
			i++
			continue
		}
		j := i
		for j < len(puts) && puts[j].rev == 0 {
			j++
		}
		end, open := tl.stop, true
		if j < len(puts) {
			end, open = puts[j].end, false
		}
		if d := end - puts[i].start; d > res.outage {
			res.outage, res.outageOpen = d, open
			res.outageFrom, res.outageTo = puts[i].start-tl.fault, end-tl.heal
		}
		i = j
	}

	for i, wt := range watchers {
		wr := watchResult{verdict: compareEvents(wt.events, hist), errors: summarizeErrors(wt.errs, wt.restarts, tl),
			diff: diffEvents(wt.events, hist), nerrs: len(wt.errs), restarts: wt.restarts}
		wr.stall, wr.stallNever = watchStall(puts, wt.events, tl)
		if i == 0 {
			res.watch = wr
		} else {
			res.leaderWatch = wr
		}
	}

	res.staleness, res.readsOK, res.readsFailed = staleness(acked, r.reads)
	res.readOutage, res.readOutageOpen = readOutage(r.reads, tl)
	return res
}

// readOutage is the longest run of consecutive failed reads, from the
// start of its first read to the end of the next successful one (or to the
// load's stop, open, if none succeeded after it).
func readOutage(reads []read, tl timeline) (longest time.Duration, open bool) {
	for i := 0; i < len(reads); {
		if reads[i].rev > 0 {
			i++
			continue
		}
		j := i
		for j < len(reads) && reads[j].rev == 0 {
			j++
		}
		end, o := tl.stop, true
		if j < len(reads) {
			end, o = reads[j].end, false
		}
		if d := end - reads[i].start; d > longest {
			longest, open = d, o
		}
		i = j
	}
	return longest, open
}

// watchStall is the longest time the watch held back an acknowledged put:
// the largest (event received − put acknowledged) over successful puts.
// Time in which no put succeeds does not count, so a write outage does not
// show up as a watch stall.
func watchStall(puts []put, events []event, tl timeline) (time.Duration, bool) {
	first := make(map[string]time.Duration, len(events))
	for _, e := range events {
		if _, ok := first[e.key]; !ok {
			first[e.key] = e.at
		}
	}
	var worst time.Duration
	never := false
	for _, p := range puts {
		if p.rev == 0 {
			continue
		}
		at, ok := first[p.key]
		if !ok {
			at, never = tl.end, true
		}
		worst = max(worst, at-p.end)
	}
	return worst, never
}

// compareEvents checks the watch's events against etcd's history, event by
// event: every event once, in revision order, nothing else.
func compareEvents(got []event, want []histEvent) string {
	d := diffEvents(got, want)
	if d.same {
		return fmt.Sprintf("ok (%d)", len(want))
	}
	var parts []string
	for _, p := range []struct {
		n    int
		what string
	}{{d.missing, "missing"}, {d.dup, "duplicated"}, {d.reordered, "out of order"}, {d.extra, "not in history"}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", p.n, p.what))
		}
	}
	return fmt.Sprintf("**%s** (of %d)", strings.Join(parts, ", "), len(want))
}

// eventDiff is how a watch's events differ from etcd's history.
type eventDiff struct {
	same                           bool // exactly the history, in order
	missing, dup, reordered, extra int
}

func diffEvents(got []event, want []histEvent) eventDiff {
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		same = got[i].rev == want[i].rev && got[i].key == want[i].key
	}
	if same {
		return eventDiff{same: true}
	}
	wantSet := make(map[histEvent]bool, len(want))
	for _, e := range want {
		wantSet[e] = true
	}
	seen := make(map[histEvent]int, len(got))
	var dup, extra, reordered int
	for i, e := range got {
		k := histEvent{e.rev, e.key}
		seen[k]++
		if seen[k] > 1 {
			dup++
		}
		if !wantSet[k] {
			extra++
		}
		if i > 0 && e.rev < got[i-1].rev {
			reordered++
		}
	}
	missing := 0
	for _, e := range want {
		if seen[e] == 0 {
			missing++
		}
	}
	return eventDiff{missing: missing, dup: dup, reordered: reordered, extra: extra}
}

// summarizeErrors groups the errors a watch saw, each with its count and
// first time relative to the fault.
func summarizeErrors(errs []watchError, restarts int, tl timeline) string {
	if len(errs) == 0 && restarts == 0 {
		return "none"
	}
	type group struct {
		n     int
		first time.Duration
	}
	groups := map[string]*group{}
	var order []string
	for _, e := range errs {
		g, ok := groups[e.msg]
		if !ok {
			g = &group{first: e.at}
			groups[e.msg] = g
			order = append(order, e.msg)
		}
		g.n++
	}
	var parts []string
	for _, msg := range order {
		g := groups[msg]
		parts = append(parts, fmt.Sprintf("%q ×%d, first at fault%s", msg, g.n, signed(g.first-tl.fault)))
	}
	if restarts > 0 {
		parts = append(parts, fmt.Sprintf("%d re-watch", restarts))
	}
	return strings.Join(parts, "; ")
}

// staleness is the largest age of a serializable read: for a read that
// started at t and saw store revision R, the time since the earliest of the
// acknowledged puts acknowledged before t with a revision above R (0 if
// none).
func staleness(acked []put, reads []read) (worst time.Duration, ok, failed int) {
	acked = slices.Clone(acked)
	slices.SortFunc(acked, func(a, b put) int { return cmp.Compare(a.end, b.end) })
	for _, rd := range reads {
		if rd.rev == 0 {
			failed++
			continue
		}
		ok++
		for _, p := range acked {
			if p.end >= rd.start {
				break
			}
			if p.rev > rd.rev {
				worst = max(worst, rd.start-p.end)
				break
			}
		}
	}
	return worst, ok, failed
}

func signed(d time.Duration) string {
	if d < 0 {
		return "−" + secs(-d)
	}
	return "+" + secs(d)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// markdown renders the results as one table, with a legend.
func markdown(header string, results []result) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("\n| scenario | target | puts ok | puts failed | outage (longest failed run) | watch stall | watch events | watch errors | require-leader watch stall | require-leader watch events | require-leader watch errors | max serializable staleness | serializable reads failed |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		failed := fmt.Sprintf("%d", r.putsFailed)
		if r.committedFailed > 0 {
			failed += fmt.Sprintf(" (%d committed)", r.committedFailed)
		}
		if r.putsFailed > 0 {
			failed += fmt.Sprintf(", from fault%s to heal%s", signed(r.failedFrom), signed(r.failedTo))
		}
		ok := fmt.Sprintf("%d", r.putsOK)
		if r.unknownAcked > 0 {
			ok += fmt.Sprintf(" (**%d not in history**)", r.unknownAcked)
		}
		outage := "none"
		if r.putsFailed > 0 {
			end := "ends heal" + signed(r.outageTo)
			if r.outageOpen {
				end = "never ended"
			}
			outage = fmt.Sprintf("%s (from fault%s, %s)", secs(r.outage), signed(r.outageFrom), end)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d of %d |\n",
			r.scenario, r.target, ok, failed, outage,
			stall(r.watch), r.watch.verdict, r.watch.errors,
			stall(r.leaderWatch), r.leaderWatch.verdict, r.leaderWatch.errors,
			secs(r.staleness), r.readsFailed, r.readsOK+r.readsFailed)
	}
	b.WriteString(`
- outage: the longest run of consecutive failed puts (in issue order), from the start of its first put to the end of the next successful put; "from fault" and "ends heal" place it on the fault's timeline.
- puts failed: (committed) counts failed puts that etcd's history shows committed anyway (the client gave up, the write happened); "from fault … to heal …" is the start of the first failed put and the end of the last one.
- watch stall: the longest time a watch held back an acknowledged put (event received − put acknowledged, largest over successful puts); time in which no put succeeds does not count.
- watch events: the watch's events compared one by one with etcd's history of the prefix, read from a healthy member: "ok (N)" when it got every one of the N events exactly once, in revision order, and nothing else. A watch whose channel closes watches again from the revision after its last event.
- max serializable staleness: for each serializable Get, the time since the earliest put acknowledged before the Get started whose revision the answering member had not reached; the largest. Puts of every target count, and those of a reference writer that writes to member 1 directly.
`)
	return b.String()
}

func stall(w watchResult) string {
	if w.stallNever {
		return secs(w.stall) + " (never delivered)"
	}
	return secs(w.stall)
}
