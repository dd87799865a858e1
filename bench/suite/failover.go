package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/benchjson"
)

// The failover section: bench/failover (-failover), run as a child with
// -json, starts its own 3-member etcd cluster (embedded, no fsync) with a
// TCP forwarder in front of each member, and the targets side by side
// (direct: clientv3 with the three endpoints; the proxies given them all;
// no ceiling); member 0 is a follower, and this proxy starts on it. For
// each scenario (silent: member 0's forwarder passes no bytes and closes
// nothing; isolated: member 0's raft traffic is cut) it loads every target
// at once, makes member 0 faulty for a while, heals it and loads on. Per
// target: the share of puts that failed, the longest run of failed puts
// and of failed serializable reads (outage, from the start of the first
// failure to the end of the next success), the longest a watch held back
// an acknowledged put (plain and WithRequireLeader), watch events missed,
// repeated, out of order or foreign against etcd's history, and the
// largest staleness of a serializable read. -failover-flags passes flags
// of bench/failover (its defaults: both scenarios, 3 s of load, 20 s of
// fault, 10 s after).

var (
	failoverBin   string
	failoverFlags string
	failoverSetup *failoverSetupJSON
	failoverRan   []string // the scenarios run
)

func init() {
	childSection{
		name: "failover", bench: "failover",
		example: "-faulty-leader -fault=10s",
		quick:   "-scenarios=silent -warmup=1s -fault=3s -recovery=2s -drain=5s",
		bin:     &failoverBin, extra: &failoverFlags,
		run: runFailover,
		ran: func() bool { return failoverSetup != nil },
		about: func() string {
			s := failoverSetup
			role := "a follower"
			if s.FaultyLeader {
				role = "the leader"
			}
			return fmt.Sprintf("bench/failover: its own 3-member cluster, every target loaded at once; member 0 (%s, where etcdproxy starts) %s for %v after %v of load, then %v more; "+
				"per target a put every %v (deadline %v), serializable reads, two watches checked against etcd's history; an outage runs from the first failure of a run to the next success; no ceiling",
				role, strings.Join(failoverRan, ", then "), secondsDur(s.FaultSeconds), secondsDur(s.WarmupSeconds), secondsDur(s.RecoverySeconds),
				time.Duration(s.PutIntervalMs*float64(time.Millisecond)), time.Duration(s.PutTimeoutMs*float64(time.Millisecond)))
		},
	}.register()
}

// The result failover prints (bench/internal/benchjson).
type (
	failoverJSON      = benchjson.Failover
	failoverSetupJSON = benchjson.FailoverSetup
)

// watchBad counts a watch's events missed, repeated, out of order or not
// in etcd's history.
func watchBad(w benchjson.FailoverWatch) int {
	return w.Missing + w.Duplicated + w.OutOfOrder + w.NotInHistory
}

var failoverScenario = map[string]string{"silent": "silent (no bytes, no close)", "isolated": "isolated from its peers"}

func runFailover(_ context.Context, o options, res *results) error {
	var r failoverJSON
	names, ran, err := childBench{section: "failover", name: "failover", bin: failoverBin, flags: failoverFlags,
		targets: map[string]string{"direct": "direct", "grpc-proxy": "grpcproxy", "etcdproxy": "etcdproxy"}}.run(o, &r)
	if err != nil || !ran {
		return err
	}
	failoverSetup = &r.Setup
	failoverRan = nil
	for _, t := range r.Results {
		name := names[t.Target]
		if len(failoverRan) == 0 || failoverRan[len(failoverRan)-1] != failoverScenario[t.Scenario] {
			failoverRan = append(failoverRan, failoverScenario[t.Scenario])
		}
		sec := fmt.Sprintf("failover: member 0 %s for %v", t.Scenario, secondsDur(r.Setup.FaultSeconds))
		if puts := t.PutsOK + t.PutsFailed; puts > 0 {
			res.set(sec, "puts failed %", "%.1f", false, name, 100*float64(t.PutsFailed)/float64(puts))
		}
		res.set(sec, "put outage s (longest run of failed puts)", "%.2f", false, name, t.PutOutageSeconds)
		if reads := t.ReadsOK + t.ReadsFailed; reads > 0 {
			res.set(sec, "serializable reads failed %", "%.1f", false, name, 100*float64(t.ReadsFailed)/float64(reads))
		}
		res.set(sec, "read outage s (longest run of failed reads)", "%.2f", false, name, t.ReadOutageSecs)
		res.set(sec, "max serializable read staleness s", "%.2f", false, name, t.StalenessSeconds)
		res.set(sec, "watch stall s (longest a put's event was held back)", "%.2f", false, name, t.Watch.StallSeconds)
		res.set(sec, "require-leader watch stall s", "%.2f", false, name, t.RequireLeaderWatch.StallSeconds)
		res.set(sec, "watch events missed, repeated, out of order or foreign (both watches)", "%.0f", false, name, float64(watchBad(t.Watch)+watchBad(t.RequireLeaderWatch)))
	}
	return nil
}
