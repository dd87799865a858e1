package main

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/shell"
)

// awaitReady waits until the proxy has logged that it serves and a Get
// through it succeeds.
func awaitReady(p *child.Proc, endpoint string, d time.Duration) error {
	cli, err := newClient([]string{endpoint}, 0)
	if err != nil {
		return err
	}
	defer cli.Close()
	return p.AwaitReady(shell.ReadyMessage, d, func(ctx context.Context) error {
		_, err := cli.Get(ctx, "ready-probe", clientv3.WithSerializable())
		return err
	})
}
