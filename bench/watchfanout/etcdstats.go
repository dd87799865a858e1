package main

// What a phase of --auth costs the processes around the generator: the
// watchers the etcd member holds (etcd's own gauge
// etcd_debugging_mvcc_watcher_total, scraped from the member's /metrics),
// and the target's and etcd's CPU time and peak RSS.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

const watcherMetric = "etcd_debugging_mvcc_watcher_total"

// watcherStats is etcd's watcher gauge around one phase. Before is read
// before the phase opens its streams, so During - Before is what the phase
// costs etcd (Before holds watchers of others: etcd's grpc-proxy keeps one
// of its own, for instance).
type watcherStats struct {
	Before    int64  `json:"before"`     // before the streams open
	Created   int64  `json:"created"`    // once every create is answered
	DuringMax int64  `json:"during_max"` // max from Created until the streams close
	DuringMin int64  `json:"during_min"` // min over the same samples
	AtClose   int64  `json:"at_close"`   // just before the streams close
	Samples   int    `json:"samples"`    // samples in DuringMax/DuringMin
	Errors    int    `json:"errors,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// PhaseMax is DuringMax - Before: the watchers this phase holds.
	PhaseMax int64 `json:"phase_max"`
}

// procStats is the target's and etcd's CPU time over the phase (streams
// open -> streams closed) and peak RSS (VmHWM, reset at the phase's
// start); -1 where not measured.
type procStats struct {
	TargetCPUSeconds float64 `json:"target_cpu_seconds"`
	EtcdCPUSeconds   float64 `json:"etcd_cpu_seconds"`
	TargetPeakRSSKB  int64   `json:"target_peak_rss_kb"`
	EtcdPeakRSSKB    int64   `json:"etcd_peak_rss_kb"`
}

// monitor samples etcd and the processes for one phase. Every method is a
// no-op on a nil monitor (--auth=off).
type monitor struct {
	url        string
	targetPID  int
	etcdPID    int
	interval   time.Duration
	hc         *http.Client
	cpu0       [2]float64
	w          watcherStats
	mu         sync.Mutex
	stop, done chan struct{}
}

func newMonitor(o options) *monitor {
	url := o.etcdMetrics
	if url == "" {
		ep := o.putEndpoint
		if !strings.HasPrefix(ep, "http://") && !strings.HasPrefix(ep, "https://") {
			ep = "http://" + ep
		}
		url = strings.TrimSuffix(ep, "/") + "/metrics"
	}
	return &monitor{url: url, targetPID: o.targetPID, etcdPID: o.etcdPID,
		interval: time.Second, hc: &http.Client{Timeout: 5 * time.Second}}
}

// watchers reads etcd's watcher gauge.
func (m *monitor) watchers(ctx context.Context) (int64, error) {
	mfs, err := probe.Scrape(ctx, m.hc, m.url)
	if err != nil {
		return 0, err
	}
	v, ok := mfs.Sum(watcherMetric)
	if !ok {
		return 0, fmt.Errorf("%s: no %s", m.url, watcherMetric)
	}
	return int64(v), nil
}

// sample reads the gauge; a failed read counts in Errors and returns -1.
func (m *monitor) sample(ctx context.Context) int64 {
	n, err := m.watchers(ctx)
	if err != nil {
		m.mu.Lock()
		m.w.Errors++
		m.w.LastError = err.Error()
		m.mu.Unlock()
		return -1
	}
	return n
}

// during adds a sample taken while the watches are open.
func (m *monitor) during(n int64) {
	if n < 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.w.Samples == 0 || n > m.w.DuringMax {
		m.w.DuringMax = n
	}
	if m.w.Samples == 0 || n < m.w.DuringMin {
		m.w.DuringMin = n
	}
	m.w.Samples++
}

// begin is called before the phase opens its streams.
func (m *monitor) begin(ctx context.Context) {
	if m == nil {
		return
	}
	m.w.Before = m.sample(ctx)
	m.cpu0 = [2]float64{cpuSeconds(m.targetPID), cpuSeconds(m.etcdPID)}
	resetHWM(m.targetPID)
	resetHWM(m.etcdPID)
}

// watching is called once every create is answered; it samples the gauge
// every interval until closing.
func (m *monitor) watching(ctx context.Context) {
	if m == nil {
		return
	}
	n := m.sample(ctx)
	m.w.Created = n
	m.during(n)
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.done)
		t := time.NewTicker(m.interval)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				m.during(m.sample(ctx))
			}
		}
	}()
}

// closing is called just before the streams close.
func (m *monitor) closing(ctx context.Context) {
	if m == nil || m.stop == nil {
		return
	}
	close(m.stop)
	<-m.done
	n := m.sample(ctx)
	m.w.AtClose = n
	m.during(n)
}

// end is called once the streams are closed.
func (m *monitor) end() (*watcherStats, *procStats) {
	if m == nil {
		return nil, nil
	}
	p := &procStats{TargetCPUSeconds: -1, EtcdCPUSeconds: -1,
		TargetPeakRSSKB: vmHWM(m.targetPID), EtcdPeakRSSKB: vmHWM(m.etcdPID)}
	if c := cpuSeconds(m.targetPID); c >= 0 && m.cpu0[0] >= 0 {
		p.TargetCPUSeconds = c - m.cpu0[0]
	}
	if c := cpuSeconds(m.etcdPID); c >= 0 && m.cpu0[1] >= 0 {
		p.EtcdCPUSeconds = c - m.cpu0[1]
	}
	w := m.w
	if w.Before >= 0 && w.Samples > 0 {
		w.PhaseMax = w.DuringMax - w.Before
	}
	return &w, p
}

// cpuSeconds is pid's utime+stime, -1 if pid is 0 or cannot be read.
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	s, err := child.CPUSeconds(pid)
	if err != nil {
		return -1
	}
	return s
}

// resetHWM sets pid's VmHWM to its VmRSS, so that VmHWM is the phase's peak.
func resetHWM(pid int) {
	if pid > 0 {
		_ = child.ResetPeak(pid)
	}
}

// vmHWM is pid's peak RSS in KiB, -1 if pid is 0 or cannot be read.
func vmHWM(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	if _, peak, err := child.Memory(pid); err == nil {
		return peak
	}
	return -1
}
