// Package testutil is the tests' one set of helpers: real etcd members and
// proxies on loopback ports, connections to them, bounded waits, etcd's
// own watcher count, and the check that the core holds nothing. Every
// helper that starts something stops it when the test ends; every wait has
// a deadline and fails the test, naming what it waited for, when it passes.
package testutil

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/watch"
	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/netfault"
	"github.com/etcdproxy/etcdproxy/shell"
)

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	a, err := embedetcd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// StartMember starts a one-member etcd cluster (no fsync) on free loopback
// ports.
func StartMember(t testing.TB) *embedetcd.Member {
	t.Helper()
	return StartMemberWith(t, embedetcd.Options{NoFsync: true})
}

// StartMemberWith starts a one-member etcd cluster with opts. A port taken
// by another process between its choice and its use (test packages run in
// parallel) is chosen again, three times at most.
func StartMemberWith(t testing.TB, opts embedetcd.Options) *embedetcd.Member {
	t.Helper()
	for try := 1; ; try++ {
		m, err := embedetcd.StartMember("m", t.TempDir(), "http://"+FreeAddr(t), "http://"+FreeAddr(t), opts)
		if err != nil {
			if try < 3 && strings.Contains(err.Error(), "address already in use") {
				continue
			}
			t.Fatal(err)
		}
		t.Cleanup(m.Stop)
		return m
	}
}

// StartProxy starts a proxy on a free loopback port in front of endpoints,
// with the defaults of `start` adjusted by adjust (if not nil), logging to
// the test at info level.
func StartProxy(t testing.TB, endpoints []string, adjust func(*shell.Config)) *shell.Proxy {
	t.Helper()
	return StartProxyLogging(t, endpoints, adjust, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named("proxy"))
}

// StartProxyLogging is StartProxy with the logger lg (zap.NewNop() for
// none, as a benchmark wants).
func StartProxyLogging(t testing.TB, endpoints []string, adjust func(*shell.Config), lg *zap.Logger) *shell.Proxy {
	t.Helper()
	cfg := shell.DefaultConfig()
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.AdvertiseClientURL = ""
	cfg.Endpoints = endpoints
	cfg.Logger = lg
	if adjust != nil {
		adjust(&cfg)
	}
	p, err := shell.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Dial returns a plain gRPC connection to endpoint (host:port or
// http://host:port), without clientv3's retries, so that a test sees
// exactly the status a server answers with.
func Dial(t testing.TB, endpoint string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(strings.TrimPrefix(endpoint, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Client returns a clientv3 client of endpoint.
func Client(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Context returns a context that ends after d, or with the test.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitUntil polls cond until it holds, and fails the test if it still does
// not after d.
func WaitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StartClusterBehindForwarders starts n members and a netfault.Forwarder in
// front of each one's client port, so that a test can make a member silent
// or cut it off; it returns the forwarders and their endpoints, in member
// order. Everything is stopped when the test ends.
func StartClusterBehindForwarders(t testing.TB, n int) (*embedetcd.Cluster, []*netfault.Forwarder, []string) {
	t.Helper()
	cl, err := embedetcd.StartCluster(t.TempDir(), n, embedetcd.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	var fws []*netfault.Forwarder
	var eps []string
	for _, m := range cl.Members {
		fw, err := netfault.Start(strings.TrimPrefix(m.ClientURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fw.Close() })
		fws = append(fws, fw)
		eps = append(eps, "http://"+fw.Addr())
	}
	return cl, fws, eps
}

// EtcdWatchers is the number of watchers open on the etcd members embedded
// in this process (etcd's own gauge etcd_debugging_mvcc_watcher_total).
func EtcdWatchers(t testing.TB) float64 {
	t.Helper()
	return EtcdMetric(t, "etcd_debugging_mvcc_watcher_total")
}

// EtcdMetric is the sum over the etcd members embedded in this process of
// one of etcd's own counters or gauges; labels, as name/value pairs, keep
// only the series that carry them.
func EtcdMetric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var n float64
			for _, m := range mf.GetMetric() {
				if hasLabels(m.GetLabel(), labels) {
					n += m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
			return n
		}
	}
	t.Fatalf("no %s metric: is an etcd member running in this process?", name)
	return 0
}

func hasLabels(have []*dto.LabelPair, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range have {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// EtcdCalls counts the calls of one gRPC method (e.g. "LeaseTimeToLive")
// the etcd members embedded in this process have started.
func EtcdCalls(t testing.TB, method string) float64 {
	t.Helper()
	return EtcdMetric(t, "grpc_server_started_total", "grpc_method", method)
}

// NodeEmpty returns "" when the core holds nothing (no watcher, group,
// catch-up watch, history, stream, queued byte or revision fetch), and
// otherwise what it still holds.
func NodeEmpty(s node.Stats, g node.Gauges) string {
	var held []string
	if s.Watch.Watchers != 0 {
		held = append(held, fmt.Sprintf("%d watchers", s.Watch.Watchers))
	}
	if g.Watch != (watch.Gauges{}) {
		held = append(held, fmt.Sprintf("watch state %+v", g.Watch))
	}
	if g.Flow.Streams != 0 || g.Flow.QueuedBytes != 0 || g.Flow.HeldStreams != 0 || g.Flow.PendingFetches != 0 {
		held = append(held, fmt.Sprintf("streams %d, queued bytes %d, held streams %d, fetches %d",
			g.Flow.Streams, g.Flow.QueuedBytes, g.Flow.HeldStreams, g.Flow.PendingFetches))
	}
	return strings.Join(held, "; ")
}
