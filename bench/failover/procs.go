package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/shell"
)

// startProc starts a child process and logs it.
func startProc(name, bin string, args []string, logPath string) (*child.Proc, error) {
	p, err := child.Start(name, bin, args, logPath)
	if err == nil {
		logf("%s started, pid %d: %s %s", name, p.PID(), bin, strings.Join(args, " "))
	}
	return p, err
}

// awaitReady waits until the proxy has logged that it serves and a Get
// through it succeeds.
func awaitReady(p *child.Proc, endpoint string, d time.Duration) error {
	deadline := time.Now().Add(d)
	if err := p.AwaitLog(shell.ReadyMessage, d); err != nil {
		return err
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
			return fmt.Errorf("%s: Get through it still fails after %v: %v", p.Name, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
