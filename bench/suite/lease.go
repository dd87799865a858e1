package main

import (
	"context"
	"fmt"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/benchjson"
)

// The lease section: bench/leasekeepalive (-leasekeepalive), run as a
// child with -json, starts its own etcd member and, for each target in
// turn, grants fresh leases directly on etcd and keeps each alive on a
// raw LeaseKeepAlive stream through the target (by default 10,000 leases
// of TTL 10 s on 1,000 streams over 100 connections, a keep-alive per
// lease every second, 5 s warm-up, 30 s measured); then it closes the
// streams and polls a sample of the leases on etcd until they expire. Its
// ceiling is its own bare gRPC server that answers every keep-alive at
// once and refreshes nothing (so only its answers, latency, CPU and memory
// are shown). Per target: keep-alives answered a second and their share,
// answer latency, renewals reaching etcd (and their ratio to the bound
// 1.1 × leases/(TTL/3) a coalescing proxy stays under), keep-alive streams
// open on etcd, CPU and RSS of the target (etcd's for direct) and of etcd,
// answers with a TTL <= 0 (a lost lease) or above the TTL, and how long
// after its last keep-alive each sampled lease expired (a lease kept
// alive after its clients stopped shows here, and as leases never
// expired). -lease-flags passes flags of bench/leasekeepalive.

var (
	leasekeepaliveBin string
	leaseFlags        string
	leaseSetup        *leaseSetupJSON
)

func init() {
	childSection{
		name: "lease", bench: "leasekeepalive",
		example: "-leases=20000 -dup=3",
		quick:   "-leases=1000 -streams=100 -conns=20 -ttl=3 -interval=500ms -warmup=1s -duration=3s -drain=2s -sample=50 -expiry-timeout=8s",
		bin:     &leasekeepaliveBin, extra: &leaseFlags,
		run: runLease,
		ran: func() bool { return leaseSetup != nil },
		about: func() string {
			s := leaseSetup
			return fmt.Sprintf("bench/leasekeepalive: %d leases (TTL %d s) granted on etcd, kept alive on %d LeaseKeepAlive streams over %d connections through the target, a keep-alive per lease every %v, %v warm-up then %v measured; "+
				"then the streams closed and %d sampled leases polled on etcd until they expired; ceiling: a bare gRPC server answering every keep-alive at once, refreshing nothing",
				s.Leases, s.TTLSeconds, s.Streams, s.Conns, time.Duration(s.IntervalMs*float64(time.Millisecond)),
				secondsDur(s.WarmupSeconds), secondsDur(s.DurationSeconds), s.Sample)
		},
	}.register()
}

// The result leasekeepalive prints (bench/internal/benchjson).
type (
	leaseJSON      = benchjson.Lease
	leaseSetupJSON = benchjson.LeaseSetup
)

func runLease(_ context.Context, o options, res *results) error {
	var r leaseJSON
	names, ran, err := childBench{section: "lease", name: "leasekeepalive", bin: leasekeepaliveBin, flags: leaseFlags,
		targets: map[string]string{"direct": "direct", "grpc-proxy": "grpcproxy", "etcdproxy": "etcdproxy", "ceiling": "ceiling"}}.run(o, &r)
	if err != nil || !ran {
		return err
	}
	leaseSetup = &r.Setup
	sec := fmt.Sprintf("lease keep-alive, %d leases of TTL %d s", r.Setup.Leases, r.Setup.TTLSeconds)
	for _, t := range r.Targets {
		name := names[t.Target]
		res.set(sec, "keep-alives answered/s", "%.0f", true, name, t.ReceivedPerSec)
		if t.Sent > 0 {
			res.set(sec, "keep-alives answered %", "%.2f", true, name, 100*float64(t.Answered)/float64(t.Sent))
		}
		res.set(sec, "answer p50 ms", "%.1f", false, name, t.P50Ms)
		res.set(sec, "answer p99 ms", "%.1f", false, name, t.P99Ms)
		res.set(sec, "answers with TTL ≤ 0 or > TTL, stream errors", "%.0f", false, name, float64(t.BadTTL+t.StreamErrors))
		res.set(sec, "target CPU s", "%.2f", false, name, t.TargetCPUSeconds)
		res.set(sec, "target peak RSS MiB", "%.0f", false, name, float64(t.TargetPeakRSSKB)/1024)
		if t.Target == "ceiling" {
			// It refreshes nothing: its leases expire on etcd TTL after
			// the grant, and etcd's figures are not its.
			continue
		}
		res.set(sec, "renewals/s reaching etcd", "%.0f", false, name, t.RenewalsPerSec)
		res.set(sec, fmt.Sprintf("renewals ÷ bound 1.1·L/(TTL/3) = %.0f/s", r.Setup.Bound), "%.2f", false, name, t.RenewalsPerSec/r.Setup.Bound)
		res.set(sec, "keep-alive streams open on etcd", "%.0f", false, name, t.StreamsOnEtcd)
		res.set(sec, "etcd CPU s", "%.2f", false, name, t.EtcdCPUSeconds)
		if t.Expired > 0 {
			res.set(sec, "lease expired after its last keep-alive, max s", "%.1f", false, name, t.ExpiredMaxSecs)
		}
		if t.Gone > 0 {
			res.set(sec, "lease gone from etcd after its last keep-alive, max s", "%.1f", false, name, t.GoneMaxSecs)
		}
		res.set(sec, fmt.Sprintf("leases outliving their clients (of %d sampled, + left on etcd)", t.Sampled), "%.0f", false, name, float64(t.NotSeenGone+t.LeftoverRevoked))
	}
	return nil
}
