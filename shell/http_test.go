package shell_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPEndpoints: the client port and --metrics-addr serve etcd's
// metrics (/metrics), the proxy's own (/proxy/metrics) and health checks.
func TestHTTPEndpoints(t *testing.T) {
	m := testutil.StartMember(t)
	maddr, err := embedetcd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.MetricsAddr = "http://" + maddr })
	putGet(t, testutil.Client(t, p.Addr()), "k")

	for _, base := range []string{"http://" + p.Addr(), "http://" + maddr} {
		if code, body := httpGet(t, base+"/health"); code != 200 || !strings.Contains(body, `"health":"true"`) {
			t.Errorf("%s/health: %d %s", base, code, body)
		}
		if code, body := httpGet(t, base+"/proxy/health"); code != 200 || !strings.Contains(body, `"health":"true"`) {
			t.Errorf("%s/proxy/health: %d %s", base, code, body)
		}
		if code, body := httpGet(t, base+"/metrics"); code != 200 || !strings.Contains(body, "etcd_server_has_leader") {
			t.Errorf("%s/metrics does not relay etcd's metrics: %d", base, code)
		}
		code, body := httpGet(t, base+"/proxy/metrics")
		if code != 200 || !strings.Contains(body, `grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1`) {
			t.Errorf("%s/proxy/metrics lacks the put counted: %d", base, code)
		}
	}
	if code, _ := httpGet(t, "http://"+p.Addr()+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof served without --enable-pprof: %d", code)
	}
}
