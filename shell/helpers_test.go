package shell_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/shell"
)

// startMember starts a one-member etcd cluster for the test.
func startMember(t *testing.T) *embedetcd.Member { return startMemberB(t) }

func startMemberB(t testing.TB) *embedetcd.Member {
	return startMemberWith(t, embedetcd.Options{NoFsync: true})
}

// startMemberWith starts a one-member etcd cluster with opts.
func startMemberWith(t testing.TB, opts embedetcd.Options) *embedetcd.Member {
	t.Helper()
	ca, err := embedetcd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	pa, err := embedetcd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	m, err := embedetcd.StartMember("m", t.TempDir(), "http://"+ca, "http://"+pa, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

// startProxy starts a proxy on a free loopback port in front of endpoints.
func startProxy(t *testing.T, endpoints []string, adjust func(*shell.Config)) *shell.Proxy {
	return startProxyTB(t, endpoints, adjust, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named("proxy"))
}

// startProxyB starts a proxy for a benchmark, without logging.
func startProxyB(b testing.TB, endpoints []string) string {
	return startProxyTB(b, endpoints, nil, zap.NewNop()).Addr()
}

func startProxyTB(t testing.TB, endpoints []string, adjust func(*shell.Config), lg *zap.Logger) *shell.Proxy {
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

// newClient returns a clientv3 client of endpoint.
func newClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn returns a plain gRPC connection to endpoint, without clientv3's
// retries, so that tests see exactly the status a server answers with.
func rawConn(t *testing.T, endpoint string) *grpc.ClientConn { return rawConnB(t, endpoint) }

func rawConnB(t testing.TB, endpoint string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(trimScheme(endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func trimScheme(ep string) string {
	const h = "http://"
	if len(ep) > len(h) && ep[:len(h)] == h {
		return ep[len(h):]
	}
	return ep
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
