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
	jsonResult = benchjson.Failover
	jsonSetup  = benchjson.FailoverSetup
	jsonTarget = benchjson.FailoverTarget
	jsonWatch  = benchjson.FailoverWatch
)

func jsonLine(o options, rs []result) string {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	out := jsonResult{Bench: "failover", Setup: jsonSetup{
		WarmupSeconds: o.warmup.Seconds(), FaultSeconds: o.fault.Seconds(), RecoverySeconds: o.recovery.Seconds(),
		PutIntervalMs: ms(o.putInterval), PutTimeoutMs: ms(o.putTimeout), ReadIntervalMs: ms(o.readInterval),
		FaultyLeader: o.faultyLeader,
	}}
	watch := func(w watchResult) jsonWatch {
		return jsonWatch{StallSeconds: w.stall.Seconds(), StallNever: w.stallNever, Exact: w.diff.same,
			Missing: w.diff.missing, Duplicated: w.diff.dup, OutOfOrder: w.diff.reordered, NotInHistory: w.diff.extra,
			Errors: w.nerrs, Restarts: w.restarts}
	}
	for _, r := range rs {
		out.Results = append(out.Results, jsonTarget{Scenario: r.scenario, Target: r.target,
			PutsOK: r.putsOK, PutsFailed: r.putsFailed, FailedCommitted: r.committedFailed, AckedNotInHist: r.unknownAcked,
			PutOutageSeconds: r.outage.Seconds(), PutOutageOpen: r.outageOpen,
			ReadsOK: r.readsOK, ReadsFailed: r.readsFailed, ReadOutageSecs: r.readOutage.Seconds(), ReadOutageOpen: r.readOutageOpen,
			StalenessSeconds: r.staleness.Seconds(), Watch: watch(r.watch), RequireLeaderWatch: watch(r.leaderWatch)})
	}
	b, _ := json.Marshal(out)
	return string(b)
}
