package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
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
	etcdRanges                 float64            // Range calls etcd handled between its two scrapes
	etcdReads                  int64              // reads answered between them
	proxy                      map[string]float64 // the proxy's counters' increase between its two scrapes
	proxyReads                 int64              // reads answered between them
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
	if r.etcdReads == 0 {
		return 0
	}
	return r.etcdRanges / float64(r.etcdReads)
}

// snapshot is what is read at each end of the measured window, with when
// each page was read (the midpoint of its request, ns since the start).
type snapshot struct {
	etcdCPU, proxyCPU, selfCPU float64
	etcdRanges                 float64
	etcdAt, proxyAt            int64
	proxy                      map[string]float64
}

func takeSnapshot(tgt target, etcd *child.Proc, etcdURL string) (snapshot, error) {
	var s snapshot
	s.etcdCPU, _ = cpuSeconds(etcd.PID())
	s.selfCPU, _ = cpuSeconds(os.Getpid())
	if tgt.p != nil {
		s.proxyCPU, _ = cpuSeconds(tgt.p.PID())
	}
	t := now()
	m, err := scrape(etcdURL + "/metrics")
	if err != nil {
		return s, err
	}
	s.etcdAt = (t + now()) / 2
	s.etcdRanges = etcdRanges(m)
	if tgt.p != nil {
		t := now()
		pm, err := scrape("http://" + tgt.endpoint + "/proxy/metrics")
		if err != nil {
			return s, err
		}
		s.proxyAt = (t + now()) / 2
		s.proxy = map[string]float64{}
		for _, n := range proxyCounters {
			if v, ok := pm.sum(n); ok {
				s.proxy[n] = v
			}
		}
	}
	return s, nil
}

// reader is one reading goroutine's tally.
type reader struct {
	errs, bad int64   // in [w0, w1)
	done, lat []int64 // completion time and latency (ns) of each read answered from w0 on
	example   string
}

// loop reads until stop is set, keeping what it sees from w0 on.
func (rd *reader) loop(ctx context.Context, stop *atomic.Bool, kv pb.KVClient, reqs []*pb.RangeRequest, want [][]byte, seed uint64, w0, w1 int64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for !stop.Load() {
		i := rng.IntN(len(reqs))
		t := now()
		resp, err := kv.Range(ctx, reqs[i])
		e := now()
		in := e >= w0 && e < w1
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
		if e < w0 {
			continue
		}
		rd.done = append(rd.done, e)
		rd.lat = append(rd.lat, e-t)
		if len(resp.Kvs) != 1 || !bytes.Equal(resp.Kvs[0].Value, want[i]) {
			if in {
				rd.bad++
			}
			if rd.example == "" {
				rd.example = fmt.Sprintf("Range %s: %d kvs", reqs[i].Key, len(resp.Kvs))
			}
		}
	}
}

// answered counts the reads answered in [a, b).
func answered(rs []*reader, a, b int64) int64 {
	var n int64
	for _, rd := range rs {
		// done is in increasing order.
		i, _ := slices.BinarySearch(rd.done, a)
		j, _ := slices.BinarySearch(rd.done, b)
		n += int64(j - i)
	}
	return n
}

// runReads has o.clients goroutines over o.conns connections to the
// target read random hot keys in a tight loop for o.warmup, then measures
// o.duration. The readers go on until the window's second snapshot is
// taken, so that the counters scraped at each end are compared with the
// reads answered between the scrapes.
func runReads(o options, tgt target, etcd *child.Proc, etcdURL string, serializable bool) (readResult, error) {
	r := readResult{serializable: serializable}
	conns := make([]*grpc.ClientConn, o.conns)
	for i := range conns {
		c, err := dial(tgt.endpoint)
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

	w0 := now() + int64(o.warmup)
	w1 := w0 + int64(o.duration)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stop atomic.Bool
	readers := make([]*reader, o.clients)
	var wg sync.WaitGroup
	for i := range readers {
		rd := &reader{}
		readers[i] = rd
		kv := pb.NewKVClient(conns[i%len(conns)])
		wg.Go(func() { rd.loop(ctx, &stop, kv, reqs, want, uint64(i), w0, w1) })
	}
	end := func() {
		stop.Store(true)
		wg.Wait()
	}

	sleepUntil(w0)
	s0, err := takeSnapshot(tgt, etcd, etcdURL)
	if err != nil {
		cancel()
		end()
		return r, err
	}
	sleepUntil(w1)
	s1, err := takeSnapshot(tgt, etcd, etcdURL)
	end()
	if err != nil {
		return r, err
	}

	r.window = time.Duration(w1 - w0).Seconds()
	r.etcdCPU, r.proxyCPU, r.selfCPU = s1.etcdCPU-s0.etcdCPU, s1.proxyCPU-s0.proxyCPU, s1.selfCPU-s0.selfCPU
	r.etcdRanges = s1.etcdRanges - s0.etcdRanges
	r.etcdReads = answered(readers, s0.etcdAt, s1.etcdAt)
	if s1.proxy != nil {
		r.proxy = map[string]float64{}
		for n, v := range s1.proxy {
			if v0, ok := s0.proxy[n]; ok {
				r.proxy[n] = v - v0
			}
		}
		r.proxyReads = answered(readers, s0.proxyAt, s1.proxyAt)
	}
	var lat []int64
	for _, rd := range readers {
		i, _ := slices.BinarySearch(rd.done, w1)
		r.reads += int64(i)
		lat = append(lat, rd.lat[:i]...)
		r.errs += rd.errs
		r.bad += rd.bad
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
