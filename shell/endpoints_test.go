package shell_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// TestUnixSocketEndpoints: etcd members listening on unix sockets, named as
// etcd's integration framework names them (unix://localhost:m0, a socket
// file in the working directory) and by absolute path (unix:///dir/m1).
// The proxy takes them as --endpoints, forwards reads, writes and watches
// to them, and relays the member's /metrics.
func TestUnixSocketEndpoints(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir) // the relative socket lands here
	for _, ep := range []string{"unix://localhost:m0", "unix://" + filepath.Join(dir, "m1")} {
		t.Run(ep, func(t *testing.T) {
			peer, err := embedetcd.FreeAddr()
			if err != nil {
				t.Fatal(err)
			}
			m, err := embedetcd.StartMember("m", t.TempDir(), ep, "http://"+peer, embedetcd.Options{NoFsync: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Stop)
			p := testutil.StartProxy(t, []string{ep}, nil)
			ctx := testutil.Context(t, 30*time.Second)
			cc := testutil.Dial(t, p.Addr())

			l := openWatchLog(t, ctx, cc)
			l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k"), WatchId: 7})
			kv := pb.NewKVClient(cc)
			pr, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
			if err != nil {
				t.Fatalf("put through the proxy: %v", err)
			}
			rr, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
			if err != nil || len(rr.Kvs) != 1 || string(rr.Kvs[0].Value) != "v" {
				t.Fatalf("get through the proxy: %v %v", rr, err)
			}
			l.waitFor(t, ctx, map[int64]int64{7: pr.Header.Revision})

			code, body := httpGet(t, "http://"+p.Addr()+"/metrics")
			if code != http.StatusOK || !strings.Contains(body, "etcd_server_has_leader 1") {
				t.Errorf("/metrics does not relay the member's metrics:\n%.300s", body)
			}
		})
	}
}

// TestEndpointForms: every endpoint form clientv3 dials is accepted as it
// is written; one it could never dial stops the proxy with a clear error.
func TestEndpointForms(t *testing.T) {
	for _, ep := range []string{
		"127.0.0.1:2379", "http://127.0.0.1:2379", "https://etcd.example:2379", "[::1]:2379",
		"unix://localhost:m0", "unixs://localhost:m0", "unix:///var/run/etcd.sock", "unix:etcd.sock",
	} {
		cfg := shell.DefaultConfig()
		cfg.Endpoints = []string{ep}
		if err := cfg.Validate(); err != nil {
			t.Errorf("--endpoints=%s refused: %v", ep, err)
		}
	}
	for ep, want := range map[string]string{
		"etcd.example":        "missing port",
		"ftp://etcd:2379":     `unsupported scheme "ftp"`,
		"http://":             "missing host",
		"http://etcd.example": "missing port",
		"unix://":             "missing socket path",
		"":                    "empty endpoint",
	} {
		cfg := shell.DefaultConfig()
		cfg.Endpoints = []string{ep}
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--endpoints") {
			t.Errorf("--endpoints=%q: got %v, want an error naming --endpoints and %q", ep, err, want)
		}
	}
}
