package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// readyMessage is the line both proxies log once they serve.
const readyMessage = "started gRPC proxy"

// proc is a proxy running as a child process, logging to a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the process has exited
}

// procs holds every child still running, so that a signal can kill them.
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

// awaitReady waits until the process has logged readyMessage and a Get
// through it succeeds.
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
	cli, err := newClient([]string{endpoint}, 0)
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "ready-probe", clientv3.WithSerializable())
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: Get through it still fails after %v: %v", p.name, d, err)
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
