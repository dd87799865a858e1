package shell_test

import (
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// TestAuthTokensPassThrough: with auth enabled in etcd, each request through
// the proxy is authorized as the client that sent it, with etcd's own
// errors for missing or insufficient credentials.
func TestAuthTokensPassThrough(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	ctx := testutil.Context(t, 30*time.Second)

	// Set up users through the proxy, as an operator would.
	admin := testutil.Client(t, p.Addr())
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "alice", "alicepw"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "app"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "app", "app/", clientv3.GetPrefixRangeEnd("app/"), clientv3.PermissionType(authpb.READWRITE))
			return err
		},
		func() error { _, err := admin.UserGrantRole(ctx, "alice", "app"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	// With auth on, etcd refuses the proxy's Status probes (no user), after
	// its leader check: the member still counts as healthy.
	st, _ := p.CoreState()
	from := st.Failover.Answered
	testutil.WaitUntil(t, 10*time.Second, "two probes answered with auth on", func() bool {
		st, _ = p.CoreState()
		return st.Failover.Answered >= from+2
	})
	if st.Failover.Healthy != 1 || st.Failover.Stuck != "" {
		t.Errorf("failover state with auth on: %+v", st.Failover)
	}

	alice, err := clientv3.New(clientv3.Config{Endpoints: []string{p.Addr()}, Username: "alice", Password: "alicepw", DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	if _, err := alice.Put(ctx, "app/x", "1"); err != nil {
		t.Fatalf("alice writing inside her permission: %v", err)
	}
	if _, err := alice.Put(ctx, "other", "1"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("alice writing outside her permission: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	wch := alice.Watch(ctx, "other")
	if wr := <-wch; !wr.Canceled || wr.Err() == nil {
		t.Errorf("alice watching outside her permission: %+v", wr)
	}

	anon := testutil.Client(t, p.Addr())
	if _, err := anon.Get(ctx, "app/x"); !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Errorf("read without a token: %v, want %v", err, rpctypes.ErrUserEmpty)
	}

	root, err := clientv3.New(clientv3.Config{Endpoints: []string{p.Addr()}, Username: "root", Password: "rootpw", DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	r, err := root.Get(ctx, "app/x")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "1" {
		t.Fatalf("root reading alice's key: %v %v", r, err)
	}
	if _, err := root.AuthDisable(ctx); err != nil {
		t.Fatal(err)
	}
}
