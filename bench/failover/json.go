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
	Results []jsonTarget `json:"results"` // one per scenario and target
}

type jsonSetup struct {
	WarmupSeconds   float64 `json:"warmup_s"`
	FaultSeconds    float64 `json:"fault_s"`
	RecoverySeconds float64 `json:"recovery_s"`
	PutIntervalMs   float64 `json:"put_interval_ms"`
	PutTimeoutMs    float64 `json:"put_timeout_ms"`
	ReadIntervalMs  float64 `json:"read_interval_ms"`
	FaultyLeader    bool    `json:"faulty_leader"`
}

type jsonTarget struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`

	PutsOK          int `json:"puts_ok"`
	PutsFailed      int `json:"puts_failed"`
	FailedCommitted int `json:"puts_failed_committed"` // failed puts etcd committed all the same
	AckedNotInHist  int `json:"puts_acked_not_in_history"`
	// PutOutageSeconds is the longest run of failed puts (see the
	// Markdown's legend); open: no put succeeded after it.
	PutOutageSeconds float64 `json:"put_outage_s"`
	PutOutageOpen    bool    `json:"put_outage_open"`

	ReadsOK          int     `json:"reads_ok"`
	ReadsFailed      int     `json:"reads_failed"`
	ReadOutageSecs   float64 `json:"read_outage_s"` // longest run of failed serializable reads, likewise
	ReadOutageOpen   bool    `json:"read_outage_open"`
	StalenessSeconds float64 `json:"max_staleness_s"`

	Watch              jsonWatch `json:"watch"`
	RequireLeaderWatch jsonWatch `json:"require_leader_watch"`
}

type jsonWatch struct {
	StallSeconds float64 `json:"stall_s"`
	StallNever   bool    `json:"stall_never_delivered"`
	Exact        bool    `json:"exact"` // every event of the history once, in order, nothing else
	Missing      int     `json:"missing"`
	Duplicated   int     `json:"duplicated"`
	OutOfOrder   int     `json:"out_of_order"`
	NotInHistory int     `json:"not_in_history"`
	Errors       int     `json:"errors"`
	Restarts     int     `json:"restarts"`
}

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
