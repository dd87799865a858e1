package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// phaseResult is one phase on one target.
type phaseResult struct {
	name    string
	outcome string // what the hostile clients got
	// The target process (etcd itself for direct): resident memory at the
	// end of the phase and its peak during it, in KiB, and goroutines
	// (-1: not read).
	rssKB, peakKB int64
	goroutines    float64
	heapMiB       float64 // Go heap allocated and not freed (go_memstats_alloc_bytes), -1: not read
	// etcd's peak resident memory and its watcher count at the end.
	etcdPeakKB   int64
	etcdWatchers float64
	canary       canaryFigures
}

type targetResult struct {
	target                string
	phases                []phaseResult
	canaryLost, canaryDup int
	canaryErr             error
}

// runTarget starts the target's proxy (none for direct), runs every phase
// through it beside the canary, and stops it.
func runTarget(o options, name string, etcd *child.Proc, etcdURL string) (targetResult, error) {
	res := targetResult{target: name}
	endpoint, proc, metricsURL := etcdURL, etcd, etcdURL+"/metrics"
	if name != "direct" {
		// pprof, for a forced collection before the last phase's heap
		// figure (see forceGC).
		p, addr, err := o.bins().StartProxy(name, etcdURL, "--enable-pprof "+map[string]string{"etcdproxy": o.etcdproxyFlags}[name])
		if err != nil {
			return res, err
		}
		defer func() {
			p.Stop()
			logf("%s: stopped pid %d", name, p.PID())
		}()
		// Both proxies serve their own metrics at /proxy/metrics (etcd's
		// proxy serves etcd's at /metrics).
		endpoint, proc, metricsURL = addr, p, "http://"+addr+"/proxy/metrics"
	}
	pprofURL := "http://" + strings.TrimPrefix(endpoint, "http://") + "/debug/pprof/heap?gc=1"
	etcdConn, err := probe.Dial(etcdURL)
	if err != nil {
		return res, err
	}
	defer etcdConn.Close()
	etcdKV := pb.NewKVClient(etcdConn)

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		return res, err
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var c canary
	if err := c.run(ctx, cli, etcdKV, o.canaryInterval); err != nil {
		return res, err
	}

	hc := &http.Client{Timeout: 10 * time.Second}
	gauge := func(url, metric string) float64 {
		m, err := probe.Scrape(ctx, hc, url)
		if err != nil {
			return -1
		}
		v, ok := m.Sum(metric)
		if !ok {
			return -1
		}
		return v
	}
	for i, ph := range phases {
		c.setPhase(i)
		_ = child.ResetPeak(proc.PID())
		_ = child.ResetPeak(etcd.PID())
		pr := phaseResult{name: ph.name}
		measure := func() {
			pr.rssKB, pr.peakKB, _ = child.Memory(proc.PID())
			_, pr.etcdPeakKB, _ = child.Memory(etcd.PID())
			pr.goroutines = gauge(metricsURL, "go_goroutines")
			if pr.heapMiB = gauge(metricsURL, "go_memstats_alloc_bytes"); pr.heapMiB > 0 {
				pr.heapMiB /= 1 << 20
			}
			pr.etcdWatchers = gauge(etcdURL+"/metrics", "etcd_debugging_mvcc_watcher_total")
		}
		logf("%s: phase %s", name, ph.name)
		if ph.run == nil {
			time.Sleep(o.phase)
			if i == len(phases)-1 {
				// What is left once the hostile clients have gone, not
				// what the collector has yet to free.
				forceGC(ctx, hc, pprofURL, filepath.Join(o.dir, name+"-heap-after.pb.gz"))
			}
			measure()
		} else {
			pr.outcome = runAttack(ctx, o, ph.run, endpoint, etcdKV, measure)
		}
		if proc.Exited() {
			return res, fmt.Errorf("%s exited; see %s", proc.Name, proc.Log)
		}
		logf("%s: %s: %s; RSS %d KiB (peak %d), heap %.0f MiB, %v goroutines", name, ph.name, pr.outcome, pr.rssKB, pr.peakKB, pr.heapMiB, pr.goroutines)
		res.phases = append(res.phases, pr)
	}
	c.setPhase(len(phases))
	c.awaitAll(10 * time.Second)
	for i := range res.phases {
		res.phases[i].canary = c.figures(i)
		res.canaryLost += res.phases[i].canary.lost
	}
	c.mu.Lock()
	res.canaryDup, res.canaryErr = c.dups, c.err
	c.mu.Unlock()
	return res, nil
}

// forceGC asks a target's pprof handler for a heap profile after a
// collection (gc=1), twice (sync.Pool contents survive one collection),
// so that the heap figure read next counts only what is still
// referenced; the second profile is kept in path, to show what that is.
func forceGC(ctx context.Context, hc *http.Client, url, path string) {
	for i := range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			logf("forced collection through %s: %v", url, err)
			return
		}
		var w io.Writer = io.Discard
		if i == 1 {
			if f, err := os.Create(path); err == nil {
				defer f.Close()
				w = f
			}
		}
		_, _ = io.Copy(w, resp.Body)
		resp.Body.Close()
	}
}
