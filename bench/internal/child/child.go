// Package child runs a benchmark's child processes (etcd, the proxies):
// each starts with its output in a log file and is ended by its PID when the
// benchmark is done with it, when the benchmark gets a signal or runs past
// its deadline (KillOnExit), and, on Linux, by the kernel if the benchmark
// dies without cleaning up.
package child

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a child process logging to a file.
type Proc struct {
	Name string
	Log  string // the log file's path
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
}

// running holds every child still running, so that KillAll can end them.
var running = struct {
	sync.Mutex
	m map[*Proc]struct{}
}{m: map[*Proc]struct{}{}}

// Logf logs a line to stderr, with the time.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// Start runs bin with args, its output going to logPath, and logs it.
func Start(name, bin string, args []string, logPath string) (*Proc, error) {
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
	Logf("%s started, pid %d: %s %s", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	running.Lock()
	running.m[p] = struct{}{}
	running.Unlock()
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the process's ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits until the process exits, at most d; it reports whether it
// has exited.
func (p *Proc) Wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Stop ends the process by its PID: SIGTERM, then SIGKILL after 5 s.
func (p *Proc) Stop() {
	running.Lock()
	delete(running.m, p)
	running.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// KillAll kills every child still running, by PID.
func KillAll() {
	running.Lock()
	defer running.Unlock()
	for p := range running.m {
		_ = p.cmd.Process.Kill()
	}
}

// KillOnExit kills every child still running, and exits, when the
// benchmark gets SIGINT or SIGTERM (status 130) or runs past timeout
// (status 3), saying which.
func KillOnExit(timeout time.Duration) {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigc
		Logf("%v: killing every child process", s)
		KillAll()
		os.Exit(130)
	}()
	go func() {
		time.Sleep(timeout)
		Logf("run exceeded -timeout %v: killing every child process", timeout)
		KillAll()
		os.Exit(3)
	}()
}

// AwaitLog waits up to d for the process to log a line containing msg.
func (p *Proc) AwaitLog(msg string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !p.logged(msg) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before logging %q; see %s", p.Name, msg, p.Log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %q after %v; see %s", p.Name, msg, d, p.Log)
		}
	}
	return nil
}

// AwaitReady waits up to d for the process to log readyLog and then for
// probe (given a second per try) to succeed.
func (p *Proc) AwaitReady(readyLog string, d time.Duration, probe func(context.Context) error) error {
	deadline := time.Now().Add(d)
	if err := p.AwaitLog(readyLog, d); err != nil {
		return err
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := probe(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still not serving after %v: %v", p.Name, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Proc) logged(msg string) bool {
	f, err := os.Open(p.Log)
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

// CPUSeconds is process pid's utime+stime, from /proc/<pid>/stat.
func CPUSeconds(pid int) (float64, error) {
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

// Memory is process pid's resident set (VmRSS) and its peak since start or
// the last ResetPeak (VmHWM), in KiB, from /proc/<pid>/status.
func Memory(pid int) (rssKB, peakKB int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rssKB, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			peakKB, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rssKB, peakKB, nil
}

// ResetPeak sets process pid's VmHWM to its VmRSS, so that the peak
// Memory reports next is the one since now.
func ResetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// Main is what a benchmark's main does once its flags are parsed: check's
// error (bad flags) exits with status 2; then, with every child killed on
// a signal or past timeout (KillOnExit), run; its error kills every child
// and exits with status 1. name prefixes the error.
func Main(name string, timeout time.Duration, check, run func() error) {
	if err := check(); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(2)
	}
	KillOnExit(timeout)
	if err := run(); err != nil {
		KillAll()
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// WorkDir returns dir, created if missing, or, when dir is "", a new
// temporary directory whose name starts with prefix.
func WorkDir(dir, prefix string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", prefix+".")
	}
	return dir, os.MkdirAll(dir, 0o755)
}
