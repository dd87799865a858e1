package main

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/benchjson"
)

// With -json, the results are also printed after the Markdown as one line
// of JSON (the last line of stdout), for bench/suite: jsonResult.

// The result types are bench/internal/benchjson's, which bench/suite reads.
type (
	jsonResult = benchjson.Lease
	jsonSetup  = benchjson.LeaseSetup
	jsonTarget = benchjson.LeaseTarget
)

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
		exp, gone := r.expiries()
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
