package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// memKB is the process's VmRSS and VmHWM from /proc/<pid>/status.
func memKB(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rss, hwm, nil
}

// resetHWM sets the process's VmHWM to its current VmRSS.
func resetHWM(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// etcdMetrics are the figures read from etcd's /metrics.
type etcdMetrics struct {
	renewed   float64 // etcd_debugging_lease_renewed_total
	kaStarted float64 // grpc_server_started_total, LeaseKeepAlive
	kaHandled float64 // grpc_server_handled_total, LeaseKeepAlive
}

// kaOpen is the number of LeaseKeepAlive streams open on etcd.
func (m etcdMetrics) kaOpen() float64 { return m.kaStarted - m.kaHandled }

func scrape(clientURL string) (etcdMetrics, error) {
	var m etcdMetrics
	mfs, err := probe.Scrape(context.Background(), &http.Client{Timeout: 10 * time.Second}, clientURL+"/metrics")
	if err != nil {
		return m, err
	}
	var seen bool
	if m.renewed, seen = mfs.Sum("etcd_debugging_lease_renewed_total"); !seen {
		return m, fmt.Errorf("no etcd_debugging_lease_renewed_total in %s/metrics", clientURL)
	}
	m.kaStarted, _ = mfs.Sum("grpc_server_started_total", "grpc_method", "LeaseKeepAlive")
	m.kaHandled, _ = mfs.Sum("grpc_server_handled_total", "grpc_method", "LeaseKeepAlive")
	return m, nil
}
