package shell_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

func keysOf(r *clientv3.GetResponse) []string {
	var ks []string
	for _, kv := range r.Kvs {
		ks = append(ks, string(kv.Key))
	}
	return ks
}

// TestNamespaceKeyspaceBoundary shows, from a client of namespace "p/", that
// keys of the rest of etcd can be neither read, written, compared, deleted
// nor watched, including at the edges of the prefix.
func TestNamespaceKeyspaceBoundary(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.Namespace = "p/" })
	direct := testutil.Client(t, m.ClientURL)
	ns := testutil.Client(t, p.Addr())
	ctx := testutil.Context(t, 30*time.Second)

	// Keys around the prefix, written directly: "p/" itself, the first key
	// after the prefix ("p0"), and keys of another tenant.
	for _, k := range []string{"p/", "p0", "p", "o/x", "q/x", "p/a", "p/b"} {
		if _, err := direct.Put(ctx, k, "direct"); err != nil {
			t.Fatal(err)
		}
	}
	wch := ns.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(1))

	if _, err := ns.Put(ctx, "c", "ns"); err != nil {
		t.Fatal(err)
	}
	if r, err := direct.Get(ctx, "p/c"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "ns" {
		t.Fatalf("put through namespace: direct get p/c = %v, %v", r, err)
	}

	cases := []struct {
		name string
		opts []clientv3.OpOption
		key  string
		want []string
	}{
		{"all keys", []clientv3.OpOption{clientv3.WithPrefix()}, "", []string{"a", "b", "c"}},
		{"from key", []clientv3.OpOption{clientv3.WithFromKey()}, "b", []string{"b", "c"}},
		{"from the smallest key", []clientv3.OpOption{clientv3.WithFromKey()}, "\x00", []string{"a", "b", "c"}},
		{"range to the end", []clientv3.OpOption{clientv3.WithRange("\x00")}, "a", []string{"a", "b", "c"}},
		{"explicit range", []clientv3.OpOption{clientv3.WithRange("c")}, "a", []string{"a", "b"}},
		{"single key", nil, "a", []string{"a"}},
		{"key of another tenant", nil, "../o/x", nil},
	}
	for _, c := range cases {
		r, err := ns.Get(ctx, c.key, c.opts...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := keysOf(r); !slices.Equal(got, c.want) {
			t.Errorf("%s: keys %q, want %q", c.name, got, c.want)
		}
	}

	// Empty key: etcd's own error, not a read of the prefix key "p/".
	if _, err := ns.Get(ctx, ""); !errors.Is(err, rpctypes.ErrEmptyKey) {
		t.Errorf("get of empty key: %v, want %v", err, rpctypes.ErrEmptyKey)
	}

	// A txn comparing and touching keys stays inside.
	tr, err := ns.Txn(ctx).If(clientv3.Compare(clientv3.Value("a"), "=", "direct")).
		Then(clientv3.OpPut("t", "1"), clientv3.OpGet("", clientv3.WithPrefix())).Commit()
	if err != nil || !tr.Succeeded {
		t.Fatalf("txn: %v %v", tr, err)
	}
	if got := keysOf((*clientv3.GetResponse)(tr.Responses[1].GetResponseRange())); !slices.Equal(got, []string{"a", "b", "c", "t"}) {
		t.Errorf("txn range: %q", got)
	}

	// Delete everything the namespace has: nothing else goes.
	if dr, err := ns.Delete(ctx, "", clientv3.WithPrefix()); err != nil || dr.Deleted != 4 {
		t.Fatalf("delete all in namespace: %v %v", dr, err)
	}
	r, err := direct.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(r); !slices.Equal(got, []string{"o/x", "p", "p/", "p0", "q/x"}) {
		t.Errorf("keys left in etcd: %q", got)
	}

	// The watch saw exactly the namespace's keys, stripped.
	var seen []string
	for len(seen) < 8 {
		select {
		case wr := <-wch:
			if err := wr.Err(); err != nil {
				t.Fatal(err)
			}
			for _, ev := range wr.Events {
				seen = append(seen, ev.Type.String()+" "+string(ev.Kv.Key))
			}
		case <-ctx.Done():
			t.Fatalf("watch saw %q", seen)
		}
	}
	want := []string{"PUT a", "PUT b", "PUT c", "PUT t", "DELETE a", "DELETE b", "DELETE c", "DELETE t"}
	if !slices.Equal(seen, want) {
		t.Errorf("watch events %q, want %q", seen, want)
	}
}

// TestNamespaceEndingIn0xff checks the prefix end computed for a namespace
// whose last byte is 0xff: its range must stop before "b".
func TestNamespaceEndingIn0xff(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.Namespace = "a\xff" })
	direct := testutil.Client(t, m.ClientURL)
	ns := testutil.Client(t, p.Addr())
	ctx := testutil.Context(t, 30*time.Second)
	for _, k := range []string{"a\xff1", "a\xff\xff", "b", "b\x00", "a"} {
		if _, err := direct.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	r, err := ns.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(r); !slices.Equal(got, []string{"1", "\xff"}) {
		t.Errorf("keys %q, want [1 \\xff]", got)
	}
	dr, err := ns.Delete(ctx, "\x00", clientv3.WithFromKey())
	if err != nil || dr.Deleted != 2 {
		t.Fatalf("delete from key: %v %v", dr, err)
	}
	if r, _ := direct.Get(ctx, "b"); len(r.Kvs) != 1 {
		t.Errorf("key b outside the namespace was deleted")
	}
}

// TestNamespaceLeases shows the lease boundary: a namespace lists, revokes
// and reads only leases whose keys all lie inside it, while a
// concurrency.Session through the namespace works.
func TestNamespaceLeases(t *testing.T) {
	m := testutil.StartMember(t)
	pa := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.Namespace = "a/" })
	pb2 := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.Namespace = "b/" })
	a, b := testutil.Client(t, pa.Addr()), testutil.Client(t, pb2.Addr())
	ctx := testutil.Context(t, 30*time.Second)

	la, err := a.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "k", "v", clientv3.WithLease(la.ID)); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "k", "v", clientv3.WithLease(lb.ID)); err != nil {
		t.Fatal(err)
	}

	ls, err := a.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Leases) != 1 || ls.Leases[0].ID != la.ID {
		t.Errorf("namespace a lists %v, want only %x", ls.Leases, la.ID)
	}
	ttl, err := a.TimeToLive(ctx, lb.ID, clientv3.WithAttachedKeys())
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL != -1 || len(ttl.Keys) != 0 {
		t.Errorf("namespace a reads b's lease: %+v", ttl)
	}
	if ttl, err := a.TimeToLive(ctx, la.ID, clientv3.WithAttachedKeys()); err != nil || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "k" {
		t.Errorf("own lease keys: %+v %v", ttl, err)
	}
	if _, err := a.Revoke(ctx, lb.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Errorf("namespace a revoking b's lease: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if r, err := b.Get(ctx, "k"); err != nil || len(r.Kvs) != 1 {
		t.Errorf("b's key after a's revoke attempt: %v %v", r, err)
	}
	if _, err := a.KeepAliveOnce(ctx, lb.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Errorf("namespace a keeping b's lease alive: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if ka, err := a.KeepAliveOnce(ctx, la.ID); err != nil || ka.TTL <= 0 {
		t.Errorf("keeping its own lease alive: %+v %v", ka, err)
	}

	// A session (fresh lease, no keys yet) works, and so does an election
	// whose keys land inside the namespace.
	s, err := concurrency.NewSession(a, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	e := concurrency.NewElection(s, "leader")
	if err := e.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	direct := testutil.Client(t, m.ClientURL)
	r, err := direct.Get(ctx, "a/leader/", clientv3.WithPrefix())
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("election key under the namespace: %v %v", r, err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("closing the session (revokes its lease): %v", err)
	}
	if r, _ := direct.Get(ctx, "a/leader/", clientv3.WithPrefix()); len(r.Kvs) != 0 {
		t.Errorf("election key left after the session closed")
	}
}

// TestNamespaceRefusesClusterWideCalls: calls that etcd does not scope by
// key are refused under a namespace; reads of cluster state are not.
func TestNamespaceRefusesClusterWideCalls(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.Namespace = "p/" })
	cc := testutil.Dial(t, p.Addr())
	kv, mt, au, cl := pb.NewKVClient(cc), pb.NewMaintenanceClient(cc), pb.NewAuthClient(cc), pb.NewClusterClient(cc)
	ctx := testutil.Context(t, 30*time.Second)

	refused := map[string]func() error{
		"Compact":    func() error { _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 1}); return err },
		"Defragment": func() error { _, err := mt.Defragment(ctx, &pb.DefragmentRequest{}); return err },
		"MoveLeader": func() error { _, err := mt.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: 1}); return err },
		"AlarmDeactivate": func() error {
			_, err := mt.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, Alarm: pb.AlarmType_NOSPACE})
			return err
		},
		"Snapshot": func() error {
			st, err := mt.Snapshot(ctx, &pb.SnapshotRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		},
		"AuthEnable": func() error { _, err := au.AuthEnable(ctx, &pb.AuthEnableRequest{}); return err },
		"UserAdd": func() error {
			_, err := au.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "u", Password: "p"})
			return err
		},
		"RoleAdd": func() error { _, err := au.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: "r"}); return err },
		"MemberAdd": func() error {
			_, err := cl.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: []string{"http://127.0.0.1:1"}})
			return err
		},
	}
	for name, call := range refused {
		err := call()
		if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != rpctypes.ErrGRPCPermissionDenied.Error()[len("rpc error: code = PermissionDenied desc = "):] {
			t.Errorf("%s under a namespace: %v, want %v", name, err, rpctypes.ErrGRPCPermissionDenied)
		}
	}
	if _, err := mt.Status(ctx, &pb.StatusRequest{}); err != nil {
		t.Errorf("Status: %v", err)
	}
	if _, err := mt.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET}); err != nil {
		t.Errorf("alarm list: %v", err)
	}
	if r, err := au.UserList(ctx, &pb.AuthUserListRequest{}); err != nil || len(r.Users) != 0 {
		t.Errorf("user list: %v %v", r, err)
	}
	// Nothing was changed behind the refusals.
	direct := testutil.Client(t, m.ClientURL)
	if ul, err := direct.UserList(context.Background()); err != nil || len(ul.Users) != 0 {
		t.Errorf("users in etcd: %v %v", ul, err)
	}
}

// TestNamespaceLeaseOwnershipDecidedOnce: under a namespace, keep-alives
// go through the lease machine, which checks each lease's ownership once
// and remembers it: 10 streams asking for 3 of the namespace's leases and
// one of another's, 5 times each, cost etcd one TimeToLive per lease, and
// one upstream keep-alive stream. LeaseLeases checks only the leases it
// has no verdict for: a second call makes no TimeToLive call at all. A
// revoke is checked afresh and the verdict is forgotten with the lease.
func TestNamespaceLeaseOwnershipDecidedOnce(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.Namespace = "a/" })
	a, direct := testutil.Client(t, p.Addr()), testutil.Client(t, m.ClientURL)
	ctx := testutil.Context(t, 30*time.Second)

	var mine []clientv3.LeaseID
	for i := range 3 {
		g, err := a.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Put(ctx, fmt.Sprint("k", i), "v", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		mine = append(mine, g.ID)
	}
	foreign, err := direct.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Put(ctx, "b/k", "v", clientv3.WithLease(foreign.ID)); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(mine), foreign.ID)

	lc := pb.NewLeaseClient(testutil.Dial(t, p.Addr()))
	ttlCalls := testutil.EtcdCalls(t, "LeaseTimeToLive")
	kaStreams := testutil.EtcdCalls(t, "LeaseKeepAlive")
	const streams, rounds = 10, 5
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := lc.LeaseKeepAlive(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer st.CloseSend()
			for range rounds {
				for _, id := range all {
					if err := st.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
						errs <- err
						return
					}
					r, err := st.Recv()
					if err != nil {
						errs <- err
						return
					}
					if ok := r.TTL > 0; r.ID != int64(id) || ok != (id != foreign.ID) || r.TTL > 60 {
						errs <- fmt.Errorf("lease %x answered %+v", id, r)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := testutil.EtcdCalls(t, "LeaseTimeToLive") - ttlCalls; n != float64(len(all)) {
		t.Errorf("%d requests for %d leases cost etcd %v TimeToLive calls, want %d", streams*rounds*len(all), len(all), n, len(all))
	}
	if n := testutil.EtcdCalls(t, "LeaseKeepAlive") - kaStreams; n > 1 {
		t.Errorf("%v keep-alive streams opened on etcd for %d client streams, want at most 1", n, streams)
	}
	st, g := p.CoreState()
	if st.Lease.Checks != int64(len(all)) || g.Lease.Verdicts != len(all) {
		t.Errorf("lease machine: %+v %+v, want %d checks and verdicts", st.Lease, g.Lease, len(all))
	}
	if r, err := direct.TimeToLive(ctx, foreign.ID); err != nil || r.TTL < 55 {
		t.Errorf("the other namespace's lease was refreshed or lost: %+v %v", r, err)
	}

	// LeaseLeases: one more lease granted directly (no keys: it qualifies)
	// is the only one checked; the second call checks nothing.
	extra, err := direct.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{1, 0} {
		before := testutil.EtcdCalls(t, "LeaseTimeToLive")
		ls, err := a.Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []clientv3.LeaseID
		for _, l := range ls.Leases {
			got = append(got, l.ID)
		}
		slices.Sort(got)
		wantIDs := append(slices.Clone(mine), extra.ID)
		slices.Sort(wantIDs)
		if !slices.Equal(got, wantIDs) {
			t.Errorf("call %d lists %x, want %x", i+1, got, wantIDs)
		}
		if n := testutil.EtcdCalls(t, "LeaseTimeToLive") - before; n != want {
			t.Errorf("LeaseLeases call %d made %v TimeToLive calls, want %v", i+1, n, want)
		}
	}

	// A revoke: the verdict goes with the lease; a keep-alive for it is
	// answered TTL 0, as etcd answers for a lease it does not have.
	if _, err := a.Revoke(ctx, mine[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := a.KeepAliveOnce(ctx, mine[0]); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Errorf("keep-alive after revoke: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if _, g := p.CoreState(); g.Lease.Verdicts != len(all) { // 4 - revoked + extra
		t.Errorf("verdicts %d after the revoke, want %d", g.Lease.Verdicts, len(all))
	}
}
