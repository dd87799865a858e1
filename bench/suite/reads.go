package main

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/benchjson"
)

// The reads section: bench/cachereads (-cachereads), run as a child with
// -json, starts its own etcd member, writes 100 hot keys on it and, for
// each target in turn (direct, grpc-proxy, etcdproxy; no ceiling), has 64
// goroutines over 8 connections read random hot keys in a tight loop,
// serializable then linearizable; then it Puts new values of one key
// directly on etcd while one goroutine polls the key through the target.
// Per read kind: reads a second, p50/p99 latency, the share of reads that
// reached etcd (etcd's Range count over the reads), the target's CPU per
// read (etcd's for direct) and etcd's plus the target's; per write: the
// time until the poller sees it, writes never seen and stale reads.
// -reads-flags passes flags of bench/cachereads (its defaults otherwise:
// 1 s warm-up, 10 s windows, 100 writes every 50 ms).

var (
	cachereadsBin string
	readsFlags    string
	readsSetup    *readsSetupJSON // as the bench reported it, for about
)

func init() {
	childSection{
		name: "reads", bench: "cachereads",
		example: "-duration=20s -clients=128",
		quick:   "-warmup=300ms -duration=1500ms -writes=30",
		bin:     &cachereadsBin, extra: &readsFlags,
		run: runReads,
		ran: func() bool { return readsSetup != nil },
		about: func() string {
			s := readsSetup
			return fmt.Sprintf("bench/cachereads: %d goroutines over %d connections read random ones of %d hot keys (%d-byte values), serializable then linearizable, %v warm-up then %v measured; "+
				"write-to-fresh: %d Puts directly on etcd every %v, one goroutine polling the key through the target; target CPU is etcd's for direct; no ceiling",
				s.Clients, s.Conns, s.Keys, s.ValueBytes, secondsDur(s.WarmupSeconds), secondsDur(s.DurationSeconds),
				s.Writes, time.Duration(s.WriteIntervalMs*float64(time.Millisecond)))
		},
	}.register()
}

func secondsDur(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// The result cachereads prints (bench/internal/benchjson).
type (
	readsJSON      = benchjson.Reads
	readsSetupJSON = benchjson.ReadsSetup
	readsKindJSON  = benchjson.ReadsKind
)

func runReads(_ context.Context, o options, res *results) error {
	var r readsJSON
	names, ran, err := childBench{section: "reads", name: "cachereads", bin: cachereadsBin, flags: readsFlags,
		targets: map[string]string{"direct": "direct", "grpc-proxy": "grpc-proxy", "etcdproxy": "etcdproxy"}}.run(o, &r)
	if err != nil || !ran {
		return err
	}
	readsSetup = &r.Setup
	for _, t := range r.Targets {
		name := names[t.Target]
		for _, k := range []struct {
			kind string
			r    readsKindJSON
		}{{"serializable", t.Serializable}, {"linearizable", t.Linearizable}} {
			sec := fmt.Sprintf("reads: %s, %d hot keys", k.kind, r.Setup.Keys)
			res.set(sec, "reads/s", "%.0f", true, name, k.r.ReadsPerSec)
			res.set(sec, "p50 ms", "%.2f", false, name, k.r.P50Ms)
			res.set(sec, "p99 ms", "%.2f", false, name, k.r.P99Ms)
			res.set(sec, "reads reaching etcd %", "%.1f", false, name, 100*k.r.EtcdFraction)
			targetCPU, allCPU := k.r.ProxyCPUSeconds, k.r.EtcdCPUSeconds+k.r.ProxyCPUSeconds
			if name == "direct" {
				targetCPU = k.r.EtcdCPUSeconds
			}
			if k.r.Reads > 0 {
				res.set(sec, "target CPU ms per 1,000 reads", "%.1f", false, name, 1e6*targetCPU/float64(k.r.Reads))
				res.set(sec, "etcd + target CPU ms per 1,000 reads", "%.1f", false, name, 1e6*allCPU/float64(k.r.Reads))
			}
			res.set(sec, "read errors + wrong answers", "%.0f", false, name, float64(k.r.Errors+k.r.Wrong))
		}
		f := t.Fresh
		sec := "reads: write on etcd → fresh read through target"
		ms := func(p *float64) float64 {
			if p == nil {
				return math.Inf(1) // the quantile falls on a write never seen
			}
			return *p
		}
		res.set(sec, "write-to-read p50 ms", "%.2f", false, name, ms(f.P50Ms))
		res.set(sec, "write-to-read p99 ms", "%.2f", false, name, ms(f.P99Ms))
		res.set(sec, fmt.Sprintf("writes never seen, of %d", f.Writes), "%.0f", false, name, float64(f.Writes-f.Seen))
		res.set(sec, "stale reads (older than one already seen)", "%.0f", false, name, float64(f.Violations))
	}
	return nil
}
