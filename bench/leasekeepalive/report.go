package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// result is what one target showed.
type result struct {
	target string
	load   string // load average before the target's run
	grant  time.Duration

	window        float64 // measured seconds
	renewed       float64 // renewals per second on etcd
	streamsBefore float64 // LeaseKeepAlive streams open on etcd before the target's streams opened
	streamsStart  float64 // ... at the window's start
	streamsDuring float64 // ... at the window's end

	planned, sent, answered, recv int64 // in the window
	winBadTTL, badTTL, extra      int64
	rounds, lateRounds            int64
	streamErrs                    int64
	p50, p99                      time.Duration
	drained                       time.Duration // wait after the window for its last answers

	targetCPU, etcdCPU, selfCPU float64
	rssKB, hwmKB                int64

	stopGap  time.Duration // from the last keep-alive sent to the streams closing (or falling silent)
	expiry   []expiry
	pollErrs int64
	leftover int

	examples []string
}

func markdown(header string, o options, rs []result) string {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("\n| target | renewals/s on etcd | ÷ bound | KA streams on etcd | sent/s | answers/s | answered | bad TTL | p50 ms | p99 ms | target CPU s | target RSS / peak MiB | etcd CPU s | expired after last KA, p50 / max s | gone from etcd, p50 / max s |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	bd := bound(o)
	for _, r := range rs {
		streams := fmt.Sprintf("%.0f", r.streamsDuring)
		if r.streamsBefore != 0 {
			streams += fmt.Sprintf(" (%.0f before)", r.streamsBefore)
		}
		exp, gone := r.expiries()
		fmt.Fprintf(&b, "| %s | %.0f | %.2f | %s | %.0f | %.0f | %s | %d | %s | %s | %.2f | %.0f / %.0f | %.2f | %s | %s |\n",
			r.target, r.renewed, r.renewed/bd, streams,
			float64(r.sent)/r.window, float64(r.recv)/r.window, fraction(r.answered, r.sent), r.winBadTTL,
			ms(r.p50), ms(r.p99), r.targetCPU, float64(r.rssKB)/1024, float64(r.hwmKB)/1024, r.etcdCPU,
			spread(exp, len(r.expiry)), spread(gone, len(r.expiry)))
	}
	fmt.Fprintf(&b, `
Legend: one target at a time on the same etcd, %d fresh leases each. Figures are over the %v measured window unless said otherwise.
renewals/s on etcd: etcd_debugging_lease_renewed_total; ÷ bound: over 1.1 × L/(TTL/3) = %.0f/s.
KA streams on etcd: LeaseKeepAlive streams open on etcd (grpc_server_started_total − grpc_server_handled_total) at the window's end; "before": open before the target's streams were (the proxies' upstream streams, idle or not, count in every row).
Each stream sends its leases' keep-alives every %v; the streams' first rounds are spread evenly over the warm-up.
sent/s, answers/s: client keep-alive requests sent, and answers received, in the window; answered: of the window's requests, those answered by %v after it;
bad TTL: answers to them with TTL <= 0 or > %d; p50/p99: their answer latency (an answer is matched to the oldest unanswered request for its lease on its stream).
target CPU s: utime+stime of the target process in the window (for direct, etcd's); RSS at the window's end, peak = VmHWM since the streams opened.
After the window the streams were %s; %d sampled leases were polled on etcd every %v. expired: when etcd's remaining TTL reached 0 (first poll answering TTL <= 0, + 1 s since etcd truncates, − half a poll),
gone: when etcd no longer knew the lease (clientv3 reports TTL -1); both from the last keep-alive sent for the lease. etcd revokes at most 1,000 expired leases per second, so gone trails expired when many expire together.
`, o.leases, o.duration, bd, o.interval, o.drain, o.ttl, afterWord(o.after), o.sample, o.poll)
	b.WriteString("\nNotes:\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "- %s: sent %d of %d planned requests (%d of %d rounds started over an interval late), %d answers with no request waiting, %d bad-TTL answers in all, %d stream errors; "+
			"last answers %v after the window, streams %s %v after the last keep-alive; leases granted in %v; harness CPU %.2f s; load before %s; streams on etcd at window start %.0f",
			r.target, r.sent, r.planned, r.lateRounds, r.rounds, r.extra, r.badTTL, r.streamErrs,
			r.drained.Round(time.Millisecond), afterWord(o.after), r.stopGap.Round(time.Millisecond), r.grant.Round(time.Millisecond), r.selfCPU, r.load, r.streamsStart)
		if r.pollErrs > 0 {
			fmt.Fprintf(&b, "; %d TimeToLive poll errors", r.pollErrs)
		}
		if r.leftover > 0 {
			fmt.Fprintf(&b, "; %d leases never expired and were revoked", r.leftover)
		}
		if len(r.examples) > 0 {
			fmt.Fprintf(&b, "; e.g. %s", strings.Join(r.examples, "; "))
		}
		b.WriteString(".\n")
	}
	return b.String()
}

func fraction(n, of int64) string {
	if of == 0 {
		return "-"
	}
	if n == of {
		return "100%"
	}
	return fmt.Sprintf("%.2f%% (%d short)", 100*float64(n)/float64(of), of-n)
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond))
}

// spread is "p50 / max" in seconds of ds, noting how many of n are missing.
func spread(ds []time.Duration, n int) string {
	if len(ds) == 0 {
		if n == 0 {
			return "-"
		}
		return "none seen"
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	s := fmt.Sprintf("%.1f / %.1f", ds[(len(ds)-1)/2].Seconds(), ds[len(ds)-1].Seconds())
	if len(ds) < n {
		s += fmt.Sprintf(" (%d of %d not seen)", n-len(ds), n)
	}
	return s
}

// expiries are the sampled leases' times to expiry and to being gone from
// etcd, of those seen to expire and to be gone.
func (r result) expiries() (exp, gone []time.Duration) {
	for _, e := range r.expiry {
		if e.gotE {
			exp = append(exp, e.expired)
		}
		if e.gotR {
			gone = append(gone, e.revoked)
		}
	}
	return exp, gone
}
