package shell_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// --experimental-enable-grpc-logging logs each request and response as
// etcd's grpc-proxy does (same messages and fields, the payload as JSON),
// unary and streamed; without it, no call is logged.
func TestGRPCLogging(t *testing.T) {
	m := testutil.StartMember(t)
	for _, on := range []bool{true, false} {
		core, logs := observer.New(zap.InfoLevel)
		p := testutil.StartProxyLogging(t, []string{m.ClientURL}, func(c *shell.Config) { c.GRPCLogging = on }, zap.New(core))
		c := testutil.Client(t, p.Addr())
		ctx := testutil.Context(t, 20*time.Second)
		wch := c.Watch(ctx, "logged", clientv3.WithCreatedNotify())
		<-wch
		if _, err := c.Put(ctx, "logged", "value"); err != nil {
			t.Fatal(err)
		}
		if ev := <-wch; len(ev.Events) != 1 {
			t.Fatalf("watch: %+v", ev)
		}
		key := base64.StdEncoding.EncodeToString([]byte("logged"))
		find := func(msg, method, field string) bool {
			for _, e := range logs.FilterMessage(msg).All() {
				f := e.ContextMap()
				if f["grpc.method"] == method && strings.Contains(f[field].(string), key) && f["peer.address"] != nil {
					return true
				}
			}
			return false
		}
		const req, resp = "received payload logged as grpc.request.content field", "returned response payload logged as grpc.response.content field"
		lookup := func() map[string]bool {
			return map[string]bool{
				"Put request":    find(req, "Put", "grpc.request.content"),
				"Watch request":  find(req, "Watch", "grpc.request.content"),
				"Watch response": find(resp, "Watch", "grpc.response.content"),
			}
		}
		if on {
			// A response is logged once it is sent, which may be just
			// after the client has it.
			testutil.WaitUntil(t, 5*time.Second, "the Put and the Watch logged", func() bool {
				for _, ok := range lookup() {
					if !ok {
						return false
					}
				}
				return logs.FilterMessage(resp).FilterField(zap.String("grpc.method", "Put")).Len() > 0
			})
		}
		got := lookup()
		for what, ok := range got {
			if ok != on {
				t.Errorf("logging %v: %s logged: %v", on, what, ok)
			}
		}
		if on && logs.FilterMessage(resp).FilterField(zap.String("grpc.method", "Put")).Len() != 1 {
			t.Errorf("Put responses logged: %d, want 1", logs.FilterMessage(resp).FilterField(zap.String("grpc.method", "Put")).Len())
		}
	}
}

// The proxy logs its effective configuration once, at start, by flag name.
func TestStartupLogsConfiguration(t *testing.T) {
	m := testutil.StartMember(t)
	core, logs := observer.New(zap.InfoLevel)
	testutil.StartProxyLogging(t, []string{m.ClientURL}, func(c *shell.Config) { c.Namespace, c.CacheBytes = "tenant/", 1<<20 }, zap.New(core))
	lines := logs.FilterMessage("starting gRPC proxy").All()
	if len(lines) != 1 {
		t.Fatalf("%d startup lines, want 1", len(lines))
	}
	f := lines[0].ContextMap()
	if f["namespace"] != "tenant/" || f["cache-bytes"] != int64(1<<20) || fmt.Sprint(f["endpoints"]) != fmt.Sprint([]any{m.ClientURL}) {
		t.Fatalf("startup line fields: %v", f)
	}
}
