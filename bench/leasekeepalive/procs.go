package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/shell"
)

// awaitHealthy waits until etcd's /health says so.
func awaitHealthy(p *child.Proc, clientURL string, d time.Duration) error {
	deadline := time.Now().Add(d)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(clientURL + "/health")
		if err == nil {
			var b [256]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if strings.Contains(string(b[:n]), `"health":"true"`) {
				return nil
			}
		}
		if p.Exited() {
			return fmt.Errorf("%s exited; see %s", p.Name, p.Log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %v; see %s", p.Name, d, p.Log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// awaitReady waits until the proxy has logged that it serves and a
// serializable Range through it succeeds.
func awaitReady(p *child.Proc, endpoint string, d time.Duration) error {
	conn, err := dial(endpoint)
	if err != nil {
		return err
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	return p.AwaitReady(shell.ReadyMessage, d, func(ctx context.Context) error {
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready-probe"), Serializable: true})
		return err
	})
}

// freeAddr is a free 127.0.0.1 TCP address.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// cpuSeconds is the process's utime+stime from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	const userHZ = 100 // USER_HZ, 100 on every Linux ABI
	return float64(ut+st) / userHZ, nil
}

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
