package shell_test

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/leasing"
	"go.etcd.io/etcd/client/v3/namespace"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// --experimental-leasing-prefix: reads go through clientv3's leasing KV.
// The proxy takes a lease on the key it reads (its metadata under the
// prefix, inside the namespace, as etcd's proxy keeps it), answers later
// reads of it without asking etcd, and another leasing client writing the
// key revokes that lease first, so the next read through the proxy sees
// the new value.
func TestLeasingPrefix(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) {
		c.Namespace, c.LeasingPrefix, c.CacheBytes = "ns/", "/lease/", 0
	})
	c := testutil.Client(t, p.Addr())
	direct := testutil.Client(t, m.ClientURL)
	ctx := testutil.Context(t, 30*time.Second)

	if _, err := c.Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	get := func(want string) {
		t.Helper()
		r, err := c.Get(ctx, "k")
		if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != want {
			t.Fatalf("get through the proxy: %v %v, want %q", r, err, want)
		}
	}
	get("v1")
	if r, err := direct.Get(ctx, "ns//lease/k"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("the proxy's lease on k: %v %v, want its key ns//lease/k on etcd", r, err)
	}
	calls := func() float64 { return testutil.EtcdCalls(t, "Range") + testutil.EtcdCalls(t, "Txn") }
	before := calls()
	for range 3 {
		get("v1")
	}
	if n := calls() - before; n != 0 {
		t.Fatalf("3 linearizable reads of a leased key cost etcd %v Range and Txn calls, want 0", n)
	}

	// Another leasing client writes k: it revokes the proxy's lease first.
	nsc := clientv3.NewCtxClient(ctx)
	nsc.KV, nsc.Watcher, nsc.Lease = namespace.NewKV(direct.KV, "ns/"), namespace.NewWatcher(direct.Watcher, "ns/"), namespace.NewLease(direct.Lease, "ns/")
	other, closeOther, err := leasing.NewKV(nsc, "/lease/")
	if err != nil {
		t.Fatal(err)
	}
	defer closeOther()
	if _, err := other.Put(ctx, "k", "v2"); err != nil {
		t.Fatal(err)
	}
	get("v2")
	if r, err := direct.Get(ctx, "ns/k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v2" {
		t.Fatalf("etcd has %v %v, want ns/k = v2", r, err)
	}
}
