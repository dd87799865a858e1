package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
)

// The fan-out section: bench/watchfanout, run as a child with -json, opens
// W watches on one key (or spread over K keys) through the target over 100
// connections (one stream each), then writes the key(s) directly on etcd:
// a burst of puts as fast as it can, then puts at 100 a second (spread
// over the keys). Per W and K: events a second and put-to-event latency of
// each phase, the time to create the watches, the target's CPU and peak
// RSS over the run, and any event missed, repeated, out of order or not
// the watcher's (watchfanout checks every watcher). The ceiling is the
// watch ceiling (watchceiling.go).

var (
	watchfanoutBin           string
	fanoutWatchers           []int
	fanoutKeys               []int
	fanoutBurst, fanoutPaced int
)

func init() {
	register(&section{
		name:    "fanout",
		ceiling: "watch",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&watchfanoutBin, "watchfanout", "", "watchfanout binary (bench/watchfanout), for the fanout section")
			fs.Func("fanout-watchers", "fanout: watcher counts, comma separated (default 1000,10000)", func(v string) (err error) {
				fanoutWatchers, err = parseCounts(v)
				return err
			})
			fs.Func("fanout-keys", "fanout: key counts the watchers and puts are spread over, comma separated (default 1,100)", func(v string) (err error) {
				fanoutKeys, err = parseCounts(v)
				return err
			})
			fs.IntVar(&fanoutBurst, "fanout-burst", 200, "fanout: puts as fast as possible")
			fs.IntVar(&fanoutPaced, "fanout-paced", 200, "fanout: puts at 100/s after the burst")
		},
		quick: map[string]string{"fanout-watchers": "1000", "fanout-burst": "100", "fanout-paced": "50"},
		check: func(options) error {
			if watchfanoutBin == "" {
				return errors.New("needs -watchfanout")
			}
			if len(fanoutWatchers) == 0 {
				fanoutWatchers = []int{1000, 10000}
			}
			if len(fanoutKeys) == 0 {
				fanoutKeys = []int{1, 100}
			}
			if fanoutBurst < 1 || fanoutPaced < 1 {
				return errors.New("-fanout-burst and -fanout-paced must be positive")
			}
			return nil
		},
		each: runFanout,
		about: func(options) string {
			return fmt.Sprintf("%v watchers on each of %v keys (watcher i on key i mod keys) over 100 connections, %d puts as fast as possible then %d at 100/s, spread over the keys, written directly on etcd; the ceiling is a bare Watch server with one upstream watch per distinct create request, each upstream response encoded once and sent to every watcher behind its own watch ID field (a watcher's queued responses merged into one)", fanoutWatchers, fanoutKeys, fanoutBurst, fanoutPaced)
		},
	})
}

// fanoutPhase and fanoutResult are the parts of watchfanout's JSON result
// the table shows.
type fanoutPhase struct {
	EventsPerSec float64 `json:"events_per_sec"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	TimedOut     bool    `json:"timed_out"`
}

type fanoutResult struct {
	Created       int         `json:"created"`
	CreateSeconds float64     `json:"create_seconds"`
	Burst         fanoutPhase `json:"burst"`
	Paced         fanoutPhase `json:"paced"`
	WatchersCut   int         `json:"watchers_cut"`
	MissingEvents int64       `json:"missing_events"`
	Duplicates    int64       `json:"duplicate_events"`
	OutOfOrder    int64       `json:"out_of_order_events"`
	Foreign       int64       `json:"foreign_events"`
}

// parseCounts parses a comma-separated list of positive counts.
func parseCounts(v string) ([]int, error) {
	var ns []int
	for _, f := range strings.Split(v, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// runFanout measures the fan-out through one target for each key count
// and watcher count.
func runFanout(_ context.Context, o options, res *results, t target, etcd member) error {
	for _, k := range fanoutKeys {
		for _, w := range fanoutWatchers {
			if err := fanoutOnce(o, res, t, etcd, w, k); err != nil {
				return err
			}
		}
	}
	return nil
}

// fanoutOnce runs watchfanout once: w watchers on k keys through t.
func fanoutOnce(o options, res *results, t target, etcd member, w, k int) error {
	proc := t.cpuProc(etcd)
	etcdURL := etcd.url
	_ = child.ResetPeak(proc.PID())
	cpu0, _ := child.CPUSeconds(proc.PID())
	logPath := filepath.Join(o.dir, fmt.Sprintf("watchfanout-%s-%d-%d.log", t.name, w, k))
	p, err := child.Start("watchfanout", watchfanoutBin, []string{
		"-endpoints=" + strings.TrimPrefix(t.endpoint, "http://"), "-put-endpoint=" + strings.TrimPrefix(etcdURL, "http://"),
		fmt.Sprintf("-watchers=%d", w), "-conns=100", fmt.Sprintf("-burst=%d", fanoutBurst), fmt.Sprintf("-paced=%d", fanoutPaced),
		"-rate=100", "-json", fmt.Sprintf("-keys=%d", k), fmt.Sprintf("-key=suite/fanout/%s/%d/%d", t.name, w, k),
	}, logPath)
	if err != nil {
		return err
	}
	if !p.Wait(10 * time.Minute) {
		p.Stop()
		return fmt.Errorf("watchfanout did not finish; see %s", logPath)
	}
	cpu1, _ := child.CPUSeconds(proc.PID())
	_, peakKB, _ := child.Memory(proc.PID())
	var r fanoutResult
	if err := decodeLastJSON(logPath, &r); err != nil {
		return fmt.Errorf("watchfanout: %w; see %s", err, logPath)
	}
	sec := fmt.Sprintf("fan-out, %d watchers on one key", w)
	if k > 1 {
		sec = fmt.Sprintf("fan-out, %d watchers on %d keys", w, k)
	}
	child.Logf("%s through %s: burst %.0f events/s (p99 %.1f ms), paced p99 %.1f ms, created in %.2f s", sec, t.name, r.Burst.EventsPerSec, r.Burst.P99Ms, r.Paced.P99Ms, r.CreateSeconds)
	res.set(sec, "burst events/s", "%.0f", true, t.name, r.Burst.EventsPerSec)
	res.set(sec, "burst p50 ms", "%.1f", false, t.name, r.Burst.P50Ms)
	res.set(sec, "burst p99 ms", "%.1f", false, t.name, r.Burst.P99Ms)
	res.set(sec, "paced p50 ms", "%.1f", false, t.name, r.Paced.P50Ms)
	res.set(sec, "paced p99 ms", "%.1f", false, t.name, r.Paced.P99Ms)
	res.set(sec, "watches created in s", "%.2f", false, t.name, r.CreateSeconds)
	res.set(sec, "target CPU s", "%.2f", false, t.name, cpu1-cpu0)
	res.set(sec, "target peak RSS MiB", "%.0f", false, t.name, float64(peakKB)/1024)
	bad := float64(r.MissingEvents + r.Duplicates + r.OutOfOrder + r.Foreign + int64(r.WatchersCut))
	if r.Burst.TimedOut || r.Paced.TimedOut {
		bad = max(bad, 1)
	}
	res.set(sec, "events missed, repeated, out of order or foreign, watchers cut", "%.0f", false, t.name, bad)
	return nil
}
