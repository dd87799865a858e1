package shell_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// TestEndpointsAutoSync: given one member and --endpoints-auto-sync-interval,
// the proxy learns the others from the cluster and logs the new list (etcd's
// e2e test TestGrpcProxyAutoSync waits for such a line).
func TestEndpointsAutoSync(t *testing.T) {
	cl, err := embedetcd.StartCluster(t.TempDir(), 3, embedetcd.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	core, logs := observer.New(zap.InfoLevel)
	cfg := shell.DefaultConfig()
	cfg.ListenAddr, cfg.AdvertiseClientURL = "127.0.0.1:0", ""
	cfg.Endpoints = []string{cl.Members[0].ClientURL}
	cfg.EndpointsAutoSyncInterval = 200 * time.Millisecond
	cfg.Logger = zap.New(core)
	p, err := shell.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	testutil.WaitUntil(t, 10*time.Second, "a log line naming every member", func() bool {
		for _, e := range logs.FilterMessage("etcd endpoints updated by auto-sync").All() {
			listed := fmt.Sprint(e.ContextMap()["endpoints"])
			all := true
			for _, m := range cl.Members {
				all = all && strings.Contains(listed, strings.TrimPrefix(m.ClientURL, "http://"))
			}
			if all {
				return true
			}
		}
		return false
	})
}
