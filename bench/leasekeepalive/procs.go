package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
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
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(clientURL + "/metrics")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("GET %s/metrics: %s", clientURL, resp.Status)
	}
	seen := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		var dst *float64
		switch name {
		case "etcd_debugging_lease_renewed_total":
			dst, seen = &m.renewed, true
		case "grpc_server_started_total":
			if strings.Contains(line, `grpc_method="LeaseKeepAlive"`) {
				dst = &m.kaStarted
			}
		case "grpc_server_handled_total":
			if strings.Contains(line, `grpc_method="LeaseKeepAlive"`) {
				dst = &m.kaHandled
			}
		}
		if dst == nil {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return m, fmt.Errorf("metrics line %q: %w", line, err)
		}
		*dst += v
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if !seen {
		return m, fmt.Errorf("no etcd_debugging_lease_renewed_total in %s/metrics", clientURL)
	}
	return m, nil
}
