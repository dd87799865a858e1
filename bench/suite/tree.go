package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// The tree section: -tree-watchers watchers on one key, spread over
// -tree-conns connections (one watch stream each), through proxies of one
// kind in two configurations, each a set of fresh processes of the
// section's own (the suite's target is stopped):
//
//   - one proxy: one proxy in front of the member;
//   - root + leaves: one root proxy in front of the member and -tree-leaves
//     leaf proxies each in front of the root (--endpoints=<root>), the
//     watchers' connections spread evenly over the leaves.
//
// bench/watchfanout (-watchfanout, a child, -json) creates the watches,
// then writes the key directly on etcd: -tree-burst puts as fast as it
// can, then -tree-paced at -tree-rate a second; it checks every watcher's
// events. Both configurations are measured for each -tree-start mode: now
// (the watches are created without a start revision, as clientv3's Watch
// without WithRev does: watchfanout -start-now) and next (each at the
// revision after etcd's current one, as in the fanout section; etcdproxy
// then reads etcd at that revision for each create, and a leaf's reads go
// through the root to etcd). Nothing writes the key until every watch is
// created, so in both modes every watcher must get every put.
//
// Per configuration: watchers created and the time to create them, each
// phase's events a second and put-to-event p50/p99, events missed,
// repeated, out of order or foreign and watchers cut; the watchers etcd
// itself holds (its etcd_debugging_mvcc_watcher_total, scraped every
// 250 ms during the run, the highest) and the Range calls it answered
// (the proxies' revision reads among them); the summed peak RSS (VmHWM,
// reset before the run) and CPU seconds of every proxy process of the
// configuration, and that RSS's growth over the watchers created; etcd's
// and watchfanout's CPU (on 2 cores the clients' decoding bounds the
// events a second).
//
// It runs for etcdproxy and for etcd's grpc-proxy (both tiers of the same
// kind); direct and the ceiling have no tree and are skipped.

var (
	treeWatchers, treeConns, treeLeaves int
	treeBurst, treePaced                int
	treeRate                            float64
	treeCreateTimeout                   time.Duration
	treeStarts                          []string
)

// treeStartDesc names each -tree-start mode in the table.
var treeStartDesc = map[string]string{"now": "from now", "next": "from the next revision"}

func init() {
	register(&section{
		name: "tree",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&treeWatchers, "tree-watchers", 100000, "tree: watchers on one key")
			fs.IntVar(&treeConns, "tree-conns", 1000, "tree: client connections (one watch stream each) the watchers are spread over")
			fs.IntVar(&treeLeaves, "tree-leaves", 4, "tree: leaf proxies in front of the root proxy")
			fs.IntVar(&treeBurst, "tree-burst", 20, "tree: puts as fast as possible")
			fs.IntVar(&treePaced, "tree-paced", 10, "tree: puts at -tree-rate after the burst")
			fs.Float64Var(&treeRate, "tree-rate", 2, "tree: paced puts a second")
			fs.DurationVar(&treeCreateTimeout, "tree-create-timeout", 2*time.Minute, "tree: the longest wait for every watch to be created")
			fs.Func("tree-start", "tree: how the watches start, comma separated, each measured in turn: now (no start revision, watchfanout -start-now), next (at the revision after etcd's current one, as the fanout section's) (default now,next)", func(v string) error {
				treeStarts = strings.Split(v, ",")
				for _, m := range treeStarts {
					if treeStartDesc[m] == "" {
						return fmt.Errorf("%q is neither now nor next", m)
					}
				}
				return nil
			})
		},
		quick: map[string]string{"tree-watchers": "10000", "tree-conns": "100", "tree-burst": "20", "tree-paced": "10", "tree-rate": "10", "tree-create-timeout": "30s", "tree-start": "next"},
		check: func(options) error {
			if watchfanoutBin == "" {
				return errors.New("needs -watchfanout")
			}
			if treeWatchers < 1 || treeConns < 1 || treeLeaves < 1 || treeBurst < 1 || treePaced < 1 || treeRate <= 0 || treeCreateTimeout <= 0 {
				return errors.New("-tree-watchers, -tree-conns, -tree-leaves, -tree-burst, -tree-paced, -tree-rate and -tree-create-timeout must be positive")
			}
			if len(treeStarts) == 0 {
				treeStarts = []string{"now", "next"}
			}
			if treeConns < treeLeaves {
				return errors.New("-tree-conns must be at least -tree-leaves")
			}
			return nil
		},
		each: runTree,
		about: func(options) string {
			return fmt.Sprintf("%d watchers on one key over %d connections (one watch stream each), through one proxy in front of etcd, then through a root proxy in front of etcd and %d leaf proxies in front of the root (every process fresh, both tiers of the target's kind; direct and the ceiling have no tree); from now: watches created without a start revision, as clientv3's Watch without WithRev; from the next revision: each at etcd's current revision + 1 (the fanout section's; for such a create etcdproxy reads etcd at that revision, one read per watcher, and a leaf's reads go through the root); %d puts as fast as possible then %d at %g/s, written directly on etcd; etcd watchers: the most etcd_debugging_mvcc_watcher_total showed during the run; proxy RSS and CPU: summed over every proxy process of the configuration (peak RSS, reset before the run)",
				treeWatchers, treeConns, treeLeaves, treeBurst, treePaced, treeRate)
		},
	})
}

// runTree measures t's kind of proxy, for each start mode, as one tier
// and as two, every proxy a fresh process of the section's own (t, the
// suite's, is stopped first).
func runTree(ctx context.Context, o options, res *results, t target, m member) error {
	if t.name != "etcdproxy" && t.name != "grpc-proxy" {
		return nil
	}
	t.proc.Stop() // the suite's Stop after us finds it gone
	for _, start := range treeStarts {
		if err := treeConfig(ctx, o, res, t.name, start, m, 0); err != nil {
			return err
		}
		if err := treeConfig(ctx, o, res, t.name, start, m, treeLeaves); err != nil {
			return err
		}
	}
	return nil
}

// treeConfig starts one proxy of kind in front of the member, and leaves
// of it in front of that one unless leaves is 0, measures the fan-out
// through them (the leaves, or else the one) and stops them.
func treeConfig(ctx context.Context, o options, res *results, kind, start string, m member, leaves int) error {
	name := fmt.Sprintf("tree-%s-%s", kind, start)
	config := "one proxy"
	if leaves > 0 {
		config = fmt.Sprintf("root + %d leaves", leaves)
		name += "-root"
	}
	var procs []*child.Proc
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	root, rootAddr, err := startTierProxy(o, kind, name, m.url)
	if err != nil {
		return err
	}
	procs = append(procs, root)
	endpoints := []string{rootAddr}
	if leaves > 0 {
		endpoints = nil
	}
	for i := range leaves {
		p, addr, err := startTierProxy(o, kind, fmt.Sprintf("tree-%s-%s-leaf%d", kind, start, i+1), "http://"+rootAddr)
		if err != nil {
			return err
		}
		procs, endpoints = append(procs, p), append(endpoints, addr)
	}
	return treeOnce(ctx, o, res, kind, start, config, m, procs, endpoints)
}

// startTierProxy starts a proxy of kind (etcdproxy or grpc-proxy) named
// name in front of upstream, with the flags the suite gives its target
// (StartProxy's, but with a data directory and a log of its own).
func startTierProxy(o options, kind, name, upstream string) (*child.Proc, string, error) {
	bin, args := o.etcdBin, []string{"grpc-proxy", "start"}
	if kind == "etcdproxy" {
		bin, args = o.etcdproxyBin, append([]string{"start"}, strings.Fields(o.etcdproxyFlags)...)
	}
	b := o.bins()
	return b.StartServer(name, bin, func(addr string) []string {
		return append(args, "--endpoints="+upstream, "--listen-addr="+addr,
			"--advertise-client-url=", "--data-dir="+filepath.Join(b.Dir, name+".data"))
	})
}

// treeOnce runs watchfanout once through endpoints, the watchers' entry
// points, and records the figures of the configuration (procs: every proxy
// process of it).
func treeOnce(ctx context.Context, o options, res *results, kind, start, config string, m member, procs []*child.Proc, endpoints []string) error {
	sec := fmt.Sprintf("tree, %d watchers %s: %s", treeWatchers, treeStartDesc[start], config)
	hc := &http.Client{Timeout: 5 * time.Second}
	metricsURL := m.url + "/metrics"
	ranges0, err := etcdRanges(ctx, hc, metricsURL)
	if err != nil {
		return err
	}
	var rss0KB int64
	cpu0 := make([]float64, len(procs))
	for i, p := range procs {
		kb, _, _ := child.Memory(p.PID())
		rss0KB += kb
		_ = child.ResetPeak(p.PID())
		cpu0[i], _ = child.CPUSeconds(p.PID())
	}
	etcdCPU0, _ := child.CPUSeconds(m.proc.PID())

	// etcd's watchers, sampled until watchfanout exits
	var maxWatchers int64 = -1
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if mfs, err := probe.Scrape(ctx, hc, metricsURL); err == nil {
				if v, ok := mfs.Sum("etcd_debugging_mvcc_watcher_total"); ok {
					maxWatchers = max(maxWatchers, int64(v))
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	slug := strings.NewReplacer(" ", "", "+", "-").Replace(config)
	logPath := filepath.Join(o.dir, fmt.Sprintf("watchfanout-tree-%s-%s-%s.log", kind, start, slug))
	began := time.Now()
	args := []string{
		"-endpoints=" + strings.Join(endpoints, ","), "-put-endpoint=" + strings.TrimPrefix(m.url, "http://"),
		fmt.Sprintf("-watchers=%d", treeWatchers), fmt.Sprintf("-conns=%d", treeConns),
		fmt.Sprintf("-burst=%d", treeBurst), fmt.Sprintf("-paced=%d", treePaced), fmt.Sprintf("-rate=%g", treeRate),
		fmt.Sprintf("-create-timeout=%v", treeCreateTimeout), fmt.Sprintf("-timeout=%v", treeCreateTimeout+5*time.Minute),
		"-json", fmt.Sprintf("-key=suite/tree/%s/%s/%s", kind, start, slug),
	}
	if start == "now" {
		args = append(args, "-start-now")
	}
	p, err := child.Start("watchfanout", watchfanoutBin, args, logPath)
	if err == nil {
		if !p.Wait(treeCreateTimeout + 6*time.Minute) {
			err = fmt.Errorf("watchfanout did not finish; see %s", logPath)
		}
		p.Stop()
	}
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	var rssKB int64
	var cpu float64
	for i, p := range procs {
		_, peakKB, _ := child.Memory(p.PID())
		rssKB += peakKB
		c, _ := child.CPUSeconds(p.PID())
		cpu += c - cpu0[i]
	}
	etcdCPU1, _ := child.CPUSeconds(m.proc.PID())
	ranges1, err := etcdRanges(ctx, hc, metricsURL)
	if err != nil {
		return err
	}
	var r struct {
		fanoutResult
		ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	}
	if err := decodeLastJSON(logPath, &r); err != nil {
		return fmt.Errorf("watchfanout: %w; see %s", err, logPath)
	}
	child.Logf("%s through %s: %d of %d created in %.1f s; burst %.0f events/s (p99 %.0f ms), paced p99 %.0f ms; etcd watchers at most %d; proxies' peak RSS %.0f MiB, CPU %.1f s; took %v",
		sec, kind, r.Created, treeWatchers, r.CreateSeconds, r.Burst.EventsPerSec, r.Burst.P99Ms, r.Paced.P99Ms, maxWatchers, float64(rssKB)/1024, cpu, time.Since(began).Round(time.Second))
	res.set(sec, "watchers created", "%.0f", true, kind, float64(r.Created))
	res.set(sec, "watches created in s", "%.2f", false, kind, r.CreateSeconds)
	if r.Created > 0 { // else there is no event to time: the figures stay "–"
		res.set(sec, "burst events/s", "%.0f", true, kind, r.Burst.EventsPerSec)
		res.set(sec, "burst p50 ms", "%.1f", false, kind, r.Burst.P50Ms)
		res.set(sec, "burst p99 ms", "%.1f", false, kind, r.Burst.P99Ms)
		res.set(sec, "paced events/s", "%.0f", true, kind, r.Paced.EventsPerSec)
		res.set(sec, "paced p50 ms", "%.1f", false, kind, r.Paced.P50Ms)
		res.set(sec, "paced p99 ms", "%.1f", false, kind, r.Paced.P99Ms)
	}
	bad := float64(r.MissingEvents + r.Duplicates + r.OutOfOrder + r.Foreign + int64(r.WatchersCut))
	if r.Burst.TimedOut || r.Paced.TimedOut {
		bad = max(bad, 1)
	}
	res.set(sec, "events missed, repeated, out of order or foreign, watchers cut", "%.0f", false, kind, bad)
	res.set(sec, "etcd watchers (most seen)", "%.0f", false, kind, float64(maxWatchers))
	res.set(sec, "etcd Range calls", "%.0f", false, kind, ranges1-ranges0)
	res.set(sec, "etcd CPU s", "%.2f", false, kind, etcdCPU1-etcdCPU0)
	res.set(sec, fmt.Sprintf("proxies (%d) CPU s", len(procs)), "%.2f", false, kind, cpu)
	res.set(sec, "watchfanout (the clients) CPU s", "%.2f", false, kind, r.ClientCPUSeconds)
	res.set(sec, fmt.Sprintf("proxies (%d) peak RSS MiB", len(procs)), "%.0f", false, kind, float64(rssKB)/1024)
	if r.Created > 0 {
		res.set(sec, "proxies' peak RSS growth per watcher KiB", "%.2f", false, kind, float64(rssKB-rss0KB)/float64(r.Created))
	}
	return nil
}

// etcdRanges is the number of Range calls etcd has answered.
func etcdRanges(ctx context.Context, hc *http.Client, url string) (float64, error) {
	mfs, err := probe.Scrape(ctx, hc, url)
	if err != nil {
		return 0, err
	}
	v, _ := mfs.Sum("grpc_server_handled_total", "grpc_method", "Range")
	return v, nil
}
