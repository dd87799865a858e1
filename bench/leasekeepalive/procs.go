package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// readyMessage is the line both proxies log once they serve.
const readyMessage = "started gRPC proxy"

// proc is a child process (etcd or a proxy), logging to a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the process has exited
}

// procs holds every child still running, so that a signal or the run's
// deadline can kill them.
var procs = struct {
	sync.Mutex
	m map[*proc]struct{}
}{m: map[*proc]struct{}{}}

func startProc(name, bin string, args []string, logPath string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	procs.Lock()
	procs.m[p] = struct{}{}
	procs.Unlock()
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	logf("%s started, pid %d: %s %s", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process by its PID: SIGTERM, then SIGKILL after 5 s.
func (p *proc) stop() {
	procs.Lock()
	delete(procs.m, p)
	procs.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// killAll kills every child still running, by PID; for a signal's exit.
func killAll() {
	procs.Lock()
	defer procs.Unlock()
	for p := range procs.m {
		_ = p.cmd.Process.Kill()
	}
}

// awaitHealthy waits until etcd's /health says so.
func (p *proc) awaitHealthy(clientURL string, d time.Duration) error {
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
		if p.exited() {
			return fmt.Errorf("%s exited; see %s", p.name, p.log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %v; see %s", p.name, d, p.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// awaitReady waits until the proxy has logged readyMessage and a
// serializable Range through it succeeds.
func (p *proc) awaitReady(endpoint string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !p.logged(readyMessage) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before logging %q; see %s", p.name, readyMessage, p.log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %q after %v; see %s", p.name, readyMessage, d, p.log)
		}
	}
	conn, err := dial(endpoint)
	if err != nil {
		return err
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready-probe"), Serializable: true})
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: Range through it still fails after %v: %v", p.name, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) logged(msg string) bool {
	f, err := os.Open(p.log)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), msg) {
			return true
		}
	}
	return false
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
