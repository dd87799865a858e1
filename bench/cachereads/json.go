package main

import (
	"encoding/json"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/benchjson"
)

// With -json, the results are also printed after the Markdown as one line
// of JSON (the last line of stdout), for bench/suite: jsonResult.

// The result types are bench/internal/benchjson's, which bench/suite reads.
type (
	jsonResult = benchjson.Reads
	jsonSetup  = benchjson.ReadsSetup
	jsonTarget = benchjson.ReadsTarget
	jsonReads  = benchjson.ReadsKind
	jsonFresh  = benchjson.ReadsFresh
)

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func jsonLine(o options, rs []result) string {
	out := jsonResult{Bench: "cachereads", Setup: jsonSetup{
		Keys: o.keys, ValueBytes: o.valueBytes, Clients: o.clients, Conns: o.conns,
		WarmupSeconds: o.warmup.Seconds(), DurationSeconds: o.duration.Seconds(),
		Writes: o.writes, WriteIntervalMs: msOf(o.writeInterval), FreshTimeoutMs: msOf(o.freshTimeout),
	}}
	reads := func(r readResult) jsonReads {
		return jsonReads{WindowSeconds: r.window, Reads: r.reads, ReadsPerSec: r.rate(), P50Ms: msOf(r.p50), P99Ms: msOf(r.p99),
			Errors: r.errs, Wrong: r.bad, EtcdFraction: r.etcdFraction(),
			EtcdCPUSeconds: r.etcdCPU, ProxyCPUSeconds: r.proxyCPU, HarnessCPUSeconds: r.selfCPU, ProxyCounters: r.proxy}
	}
	quantile := func(f freshResult, q float64) *float64 {
		d := f.quantileDur(q)
		if d < 0 || d == never {
			return nil
		}
		v := msOf(d)
		return &v
	}
	for _, r := range rs {
		out.Targets = append(out.Targets, jsonTarget{Target: r.target, Serializable: reads(r.ser), Linearizable: reads(r.lin),
			Fresh: jsonFresh{Writes: len(r.fresh.lat), Seen: r.fresh.seen(),
				P50Ms: quantile(r.fresh, 0.5), P99Ms: quantile(r.fresh, 0.99), MaxMs: quantile(r.fresh, 1),
				Early: r.fresh.early, Violations: r.fresh.violations, RevRegress: r.fresh.revRegress,
				PollErrors: r.fresh.errs, PollsPerSec: r.fresh.pollRate()}})
	}
	b, _ := json.Marshal(out)
	return string(b)
}
