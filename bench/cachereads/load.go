package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

var t0 = time.Now()

// now is nanoseconds since the start, on the monotonic clock.
func now() int64 { return int64(time.Since(t0)) }

func sleepUntil(t int64) {
	if d := t - now(); d > 0 {
		time.Sleep(time.Duration(d))
	}
}

// The proxies' cache counters on /proxy/metrics. grpc-proxy has the first
// two (as gauges that only grow); etcdproxy has all four.
var proxyCounters = []string{
	"etcd_grpc_proxy_cache_hits_total",
	"etcd_grpc_proxy_cache_misses_total",
	"etcdproxy_cache_consistent_hits_total",
	"etcdproxy_cache_revision_fetches_total",
}

// readResult is what one read workload showed on one target.
type readResult struct {
	serializable bool
	window       float64 // measured seconds

	reads, errs, bad int64 // reads answered, failed, and answered wrongly in the window
	p50, p99         time.Duration

	etcdCPU, proxyCPU, selfCPU float64            // seconds in the window; proxyCPU 0 for direct
	etcdRanges                 float64            // Range calls etcd handled in the window
	proxy                      map[string]float64 // the proxy's counters' increase in the window
	examples                   []string
}

func (r readResult) kind() string {
	if r.serializable {
		return "serializable"
	}
	return "linearizable"
}

func (r readResult) rate() float64 { return float64(r.reads) / r.window }

// etcdFraction is the Range calls etcd handled per read answered.
func (r readResult) etcdFraction() float64 {
	if r.reads == 0 {
		return 0
	}
	return r.etcdRanges / float64(r.reads)
}

// snapshot is what is read at each end of the measured window.
type snapshot struct {
	etcdCPU, proxyCPU, selfCPU float64
	etcdRanges                 float64
	proxy                      map[string]float64
}

func takeSnapshot(tgt target, etcd *child.Proc, etcdURL string) (snapshot, error) {
	var s snapshot
	s.etcdCPU, _ = child.CPUSeconds(etcd.PID())
	s.selfCPU, _ = child.CPUSeconds(os.Getpid())
	if tgt.p != nil {
		s.proxyCPU, _ = child.CPUSeconds(tgt.p.PID())
	}
	m, err := scrape(etcdURL + "/metrics")
	if err != nil {
		return s, err
	}
	s.etcdRanges = etcdRanges(m)
	if tgt.p != nil {
		pm, err := scrape("http://" + tgt.endpoint + "/proxy/metrics")
		if err != nil {
			return s, err
		}
		s.proxy = map[string]float64{}
		for _, n := range proxyCounters {
			if v, ok := pm.Sum(n); ok {
				s.proxy[n] = v
			}
		}
	}
	return s, nil
}

// Window phases.
const (
	warmingUp = iota
	measuring
	finished
)

// gate pauses the load at each end of the measured window while the
// counters are read, so that the reads counted in the window are exactly
// those the counters' increase is compared with: a read holds the gate
// (shared) from before it is sent until its answer, and is in the window
// if the phase was measuring when it took the gate.
type gate struct {
	mu    sync.RWMutex
	phase int // written with mu held exclusively
}

// reader is one reading goroutine's tally of the window.
type reader struct {
	reads, errs, bad int64
	lat              []int64 // ns
	example          string
}

// loop reads until the phase is finished.
func (rd *reader) loop(ctx context.Context, g *gate, kv pb.KVClient, reqs []*pb.RangeRequest, want [][]byte, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for {
		i := rng.IntN(len(reqs))
		g.mu.RLock()
		phase := g.phase
		if phase == finished {
			g.mu.RUnlock()
			return
		}
		t := time.Now()
		resp, err := kv.Range(ctx, reqs[i])
		d := time.Since(t)
		g.mu.RUnlock()
		in := phase == measuring
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if in {
				rd.errs++
			}
			if rd.example == "" {
				rd.example = fmt.Sprintf("Range %s: %v", reqs[i].Key, err)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		bad := len(resp.Kvs) != 1 || !bytes.Equal(resp.Kvs[0].Value, want[i])
		if bad && rd.example == "" {
			rd.example = fmt.Sprintf("Range %s: %d kvs", reqs[i].Key, len(resp.Kvs))
		}
		if !in {
			continue
		}
		rd.reads++
		rd.lat = append(rd.lat, int64(d))
		if bad {
			rd.bad++
		}
	}
}

// runReads has o.clients goroutines over o.conns connections to the
// target read random hot keys in a tight loop for o.warmup, then measures
// o.duration, pausing the load at each end of the window while the
// counters are read.
func runReads(o options, tgt target, etcd *child.Proc, etcdURL string, serializable bool) (readResult, error) {
	r := readResult{serializable: serializable}
	conns := make([]*grpc.ClientConn, o.conns)
	for i := range conns {
		c, err := probe.Dial(tgt.endpoint)
		if err != nil {
			return r, err
		}
		defer c.Close()
		conns[i] = c
	}
	reqs := make([]*pb.RangeRequest, o.keys)
	want := make([][]byte, o.keys)
	for i := range reqs {
		reqs[i] = &pb.RangeRequest{Key: hotKey(i), Serializable: serializable}
		want[i] = hotValue(i, o.valueBytes)
	}
	logf("%s, %s: %d goroutines over %d connections, %v warm-up, %v measured", tgt.name, r.kind(), o.clients, o.conns, o.warmup, o.duration)

	// No read should take long; a target that hangs ends the run.
	ctx, cancel := context.WithTimeout(context.Background(), o.warmup+o.duration+time.Minute)
	defer cancel()
	g := &gate{}
	readers := make([]*reader, o.clients)
	var wg sync.WaitGroup
	for i := range readers {
		rd := &reader{}
		readers[i] = rd
		kv := pb.NewKVClient(conns[i%len(conns)])
		wg.Go(func() { rd.loop(ctx, g, kv, reqs, want, uint64(i)) })
	}
	// switchTo pauses the load, takes a snapshot, moves to phase and lets
	// the load go on; it returns the snapshot and when the load paused
	// and went on.
	switchTo := func(phase int) (s snapshot, paused, resumed time.Time, err error) {
		g.mu.Lock()
		paused = time.Now()
		s, err = takeSnapshot(tgt, etcd, etcdURL)
		g.phase = phase
		if err != nil {
			g.phase = finished
		}
		resumed = time.Now()
		g.mu.Unlock()
		return s, paused, resumed, err
	}
	end := func() {
		g.mu.Lock()
		g.phase = finished
		g.mu.Unlock()
		wg.Wait()
	}

	time.Sleep(o.warmup)
	s0, p0, r0, err := switchTo(measuring)
	if err != nil {
		cancel()
		end()
		return r, err
	}
	time.Sleep(o.duration)
	s1, p1, _, err := switchTo(finished)
	end()
	if err != nil {
		return r, err
	}
	logf("%s, %s: the load paused %v and %v at the window's ends for the counters", tgt.name, r.kind(),
		r0.Sub(p0).Round(time.Millisecond), time.Since(p1).Round(time.Millisecond))

	r.window = p1.Sub(r0).Seconds()
	r.etcdCPU, r.proxyCPU, r.selfCPU = s1.etcdCPU-s0.etcdCPU, s1.proxyCPU-s0.proxyCPU, s1.selfCPU-s0.selfCPU
	r.etcdRanges = s1.etcdRanges - s0.etcdRanges
	if s1.proxy != nil {
		r.proxy = map[string]float64{}
		for n, v := range s1.proxy {
			if v0, ok := s0.proxy[n]; ok {
				r.proxy[n] = v - v0
			}
		}
	}
	var lat []int64
	for _, rd := range readers {
		r.reads += rd.reads
		r.errs += rd.errs
		r.bad += rd.bad
		lat = append(lat, rd.lat...)
		if rd.example != "" && len(r.examples) < 3 {
			r.examples = append(r.examples, rd.example)
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		r.p50 = time.Duration(lat[(len(lat)-1)/2])
		r.p99 = time.Duration(lat[(len(lat)-1)*99/100])
	}
	return r, nil
}
