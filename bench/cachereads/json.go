package main

import (
	"encoding/json"
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
	Keys            int     `json:"keys"`
	ValueBytes      int     `json:"value_bytes"`
	Clients         int     `json:"clients"`
	Conns           int     `json:"conns"`
	WarmupSeconds   float64 `json:"warmup_s"`
	DurationSeconds float64 `json:"duration_s"`
	Writes          int     `json:"writes"`
	WriteIntervalMs float64 `json:"write_interval_ms"`
	FreshTimeoutMs  float64 `json:"fresh_timeout_ms"`
}

type jsonTarget struct {
	Target       string    `json:"target"`
	Serializable jsonReads `json:"serializable"`
	Linearizable jsonReads `json:"linearizable"`
	Fresh        jsonFresh `json:"fresh"`
}

type jsonReads struct {
	WindowSeconds float64 `json:"window_s"`
	Reads         int64   `json:"reads"`
	ReadsPerSec   float64 `json:"reads_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	Errors        int64   `json:"errors"`
	Wrong         int64   `json:"wrong"`
	// EtcdFraction is the Range calls etcd handled per read answered.
	EtcdFraction      float64            `json:"etcd_fraction"`
	EtcdCPUSeconds    float64            `json:"etcd_cpu_s"`
	ProxyCPUSeconds   float64            `json:"proxy_cpu_s"` // 0 for direct
	HarnessCPUSeconds float64            `json:"harness_cpu_s"`
	ProxyCounters     map[string]float64 `json:"proxy_counters,omitempty"` // increase over the window
}

type jsonFresh struct {
	Writes int `json:"writes"`
	Seen   int `json:"seen"`
	// The quantiles of the write-to-fresh latency; null when the quantile
	// falls on a write never seen.
	P50Ms       *float64 `json:"p50_ms"`
	P99Ms       *float64 `json:"p99_ms"`
	MaxMs       *float64 `json:"max_ms"`
	Early       int      `json:"seen_before_put_returned"`
	Violations  int64    `json:"monotonic_violations"`
	RevRegress  int64    `json:"header_revision_regressions"`
	PollErrors  int64    `json:"poll_errors"`
	PollsPerSec float64  `json:"polls_per_sec"`
}

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
