package main

import (
	"encoding/json"
	"slices"
	"time"
)

// With -json, the results are also printed after the Markdown as one line
// of JSON (the last line of stdout), for bench/suite: jsonResult.

type jsonResult struct {
	Bench   string       `json:"bench"`
	Setup   jsonSetup    `json:"setup"`
	Targets []jsonTarget `json:"targets"`
}

type jsonSetup struct {
	Leases          int     `json:"leases"`
	TTLSeconds      int     `json:"ttl_s"`
	Streams         int     `json:"streams"`
	Conns           int     `json:"conns"`
	Dup             int     `json:"dup"`
	IntervalMs      float64 `json:"interval_ms"`
	WarmupSeconds   float64 `json:"warmup_s"`
	DurationSeconds float64 `json:"duration_s"`
	After           string  `json:"after"`
	Sample          int     `json:"sample"`
	// Bound is 1.1 × leases/(TTL/3), the renewals per second a coalescing
	// proxy should stay under.
	Bound float64 `json:"bound_renewals_per_sec"`
}

type jsonTarget struct {
	Target        string  `json:"target"`
	WindowSeconds float64 `json:"window_s"`
	// On etcd, over the window: renewals a second, and LeaseKeepAlive
	// streams open at its end (and before the target's streams opened).
	RenewalsPerSec      float64 `json:"renewals_per_sec"`
	StreamsOnEtcd       float64 `json:"streams_on_etcd"`
	StreamsOnEtcdBefore float64 `json:"streams_on_etcd_before"`
	// The clients' requests of the window and their answers.
	Planned        int64   `json:"planned"`
	Sent           int64   `json:"sent"`
	Answered       int64   `json:"answered"` // of the sent, by the end of the drain
	Received       int64   `json:"received"` // answers received in the window
	SentPerSec     float64 `json:"sent_per_sec"`
	ReceivedPerSec float64 `json:"received_per_sec"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	BadTTLInWindow int64   `json:"bad_ttl_in_window"` // answers with TTL <= 0 or > -ttl
	BadTTL         int64   `json:"bad_ttl"`           // ... in all
	Extra          int64   `json:"answers_unasked"`
	StreamErrors   int64   `json:"stream_errors"`
	DrainSeconds   float64 `json:"drain_s"`

	TargetCPUSeconds  float64 `json:"target_cpu_s"` // etcd's for direct
	EtcdCPUSeconds    float64 `json:"etcd_cpu_s"`
	HarnessCPUSeconds float64 `json:"harness_cpu_s"`
	TargetRSSKB       int64   `json:"target_rss_kb"`
	TargetPeakRSSKB   int64   `json:"target_peak_rss_kb"`

	// After the clients stopped, of the sampled leases: those seen to
	// expire, and to be gone from etcd, and when (p50, max), from the last
	// keep-alive sent for each.
	Sampled         int     `json:"sampled"`
	Expired         int     `json:"expired"`
	ExpiredP50Secs  float64 `json:"expired_p50_s"`
	ExpiredMaxSecs  float64 `json:"expired_max_s"`
	Gone            int     `json:"gone"`
	GoneP50Secs     float64 `json:"gone_p50_s"`
	GoneMaxSecs     float64 `json:"gone_max_s"`
	NotSeenGone     int     `json:"not_seen_gone"` // seen neither expired nor gone by the end of the polling
	PollErrors      int64   `json:"poll_errors"`
	LeftoverRevoked int     `json:"leftover_revoked"` // leases still on etcd long after; revoked by the harness
	GrantSeconds    float64 `json:"grant_s"`
}

func jsonLine(o options, rs []result) string {
	out := jsonResult{Bench: "leasekeepalive", Setup: jsonSetup{
		Leases: o.leases, TTLSeconds: o.ttl, Streams: o.streams, Conns: o.conns, Dup: o.dup,
		IntervalMs: float64(o.interval) / float64(time.Millisecond), WarmupSeconds: o.warmup.Seconds(), DurationSeconds: o.duration.Seconds(),
		After: o.after, Sample: o.sample, Bound: bound(o),
	}}
	quantiles := func(ds []time.Duration) (n int, p50, maxS float64) {
		if len(ds) == 0 {
			return 0, 0, 0
		}
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return len(ds), ds[(len(ds)-1)/2].Seconds(), ds[len(ds)-1].Seconds()
	}
	for _, r := range rs {
		var exp, gone []time.Duration
		for _, e := range r.expiry {
			if e.gotE {
				exp = append(exp, e.expired)
			}
			if e.gotR {
				gone = append(gone, e.revoked)
			}
		}
		notSeen := 0
		for _, e := range r.expiry {
			if !e.gotE && !e.gotR {
				notSeen++
			}
		}
		t := jsonTarget{NotSeenGone: notSeen, Target: r.target, WindowSeconds: r.window,
			RenewalsPerSec: r.renewed, StreamsOnEtcd: r.streamsDuring, StreamsOnEtcdBefore: r.streamsBefore,
			Planned: r.planned, Sent: r.sent, Answered: r.answered, Received: r.recv,
			P50Ms: float64(r.p50) / float64(time.Millisecond), P99Ms: float64(r.p99) / float64(time.Millisecond),
			BadTTLInWindow: r.winBadTTL, BadTTL: r.badTTL, Extra: r.extra, StreamErrors: r.streamErrs, DrainSeconds: r.drained.Seconds(),
			TargetCPUSeconds: r.targetCPU, EtcdCPUSeconds: r.etcdCPU, HarnessCPUSeconds: r.selfCPU,
			TargetRSSKB: r.rssKB, TargetPeakRSSKB: r.hwmKB,
			Sampled: len(r.expiry), PollErrors: r.pollErrs, LeftoverRevoked: r.leftover, GrantSeconds: r.grant.Seconds()}
		if r.window > 0 {
			t.SentPerSec, t.ReceivedPerSec = float64(r.sent)/r.window, float64(r.recv)/r.window
		}
		t.Expired, t.ExpiredP50Secs, t.ExpiredMaxSecs = quantiles(exp)
		t.Gone, t.GoneP50Secs, t.GoneMaxSecs = quantiles(gone)
		out.Targets = append(out.Targets, t)
	}
	b, _ := json.Marshal(out)
	return string(b)
}
