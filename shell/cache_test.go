package shell_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// sameAsEtcdAt checks that resp, an answer to req through the proxy, is
// what etcd itself answers to req at resp's revision: the answer may come
// from the cache, but it must be the store as it was at the revision it
// claims.
func sameAsEtcdAt(t *testing.T, ctx context.Context, direct pb.KVClient, req *pb.RangeRequest, resp *pb.RangeResponse) {
	t.Helper()
	at := proto.Clone(req).(*pb.RangeRequest)
	at.Revision = resp.GetHeader().GetRevision()
	want, err := direct.Range(ctx, at)
	if err != nil {
		t.Fatalf("etcd at revision %d: %v", at.Revision, err)
	}
	if !testutil.SameRange(resp, want) {
		t.Fatalf("%v answered %v at revision %d; etcd had %v", req, testutil.RangeString(resp), at.Revision, testutil.RangeString(want))
	}
}

// The cache serves repeated serializable reads without asking etcd, and a
// write made directly on etcd (not through the proxy) invalidates every
// range that holds its key: single keys, prefixes, open-ended "\x00"
// ranges and the whole keyspace. Every answer is etcd's store at the
// revision it claims.
func TestCacheInvalidatedByDirectWrites(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	direct := pb.NewKVClient(testutil.Dial(t, m.ClientURL))
	for _, k := range []string{"a", "b/1", "b/2", "c"} {
		if _, err := direct.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte("v0")}); err != nil {
			t.Fatal(err)
		}
	}
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	reqs := map[string]*pb.RangeRequest{
		"a":        {Key: []byte("a"), Serializable: true},
		"prefix b": {Key: []byte("b/"), RangeEnd: []byte("b0"), Serializable: true},
		"from b":   {Key: []byte("b"), RangeEnd: []byte{0}, Serializable: true},
		"all":      {Key: []byte{0}, RangeEnd: []byte{0}, Serializable: true},
		"c keys":   {Key: []byte("c"), KeysOnly: true, Serializable: true},
	}
	read := func(name string) *pb.RangeResponse {
		t.Helper()
		resp, err := kv.Range(ctx, proto.Clone(reqs[name]).(*pb.RangeRequest))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sameAsEtcdAt(t, ctx, direct, reqs[name], resp)
		return resp
	}
	// Fill: until the subscription is live, reads are forwarded.
	testutil.WaitUntil(t, 10*time.Second, "every range cached", func() bool {
		for name := range reqs {
			read(name)
		}
		st, _ := p.CoreState()
		return st.Cache.Entries == len(reqs)
	})
	calls := testutil.EtcdCalls(t, "Range")
	st0, _ := p.CoreState()
	for range 20 {
		for name := range reqs {
			read(name)
		}
	}
	st1, _ := p.CoreState()
	// sameAsEtcdAt itself reads etcd once per answer.
	if got := testutil.EtcdCalls(t, "Range") - calls; got != float64(20*len(reqs)) || st1.Cache.Hits-st0.Cache.Hits != int64(20*len(reqs)) {
		t.Fatalf("100 repeated reads: %v Range calls reached etcd beyond the checks, %d hits", got-float64(20*len(reqs)), st1.Cache.Hits-st0.Cache.Hits)
	}

	// A direct write of b/2 invalidates "prefix b", "from b" and "all";
	// "a" and "c keys" stay. Until an answer shows the write, it claims a
	// revision before it.
	put, err := direct.Put(ctx, &pb.PutRequest{Key: []byte("b/2"), Value: []byte("v1")})
	if err != nil {
		t.Fatal(err)
	}
	rev := put.Header.Revision
	for _, name := range []string{"prefix b", "from b", "all"} {
		testutil.WaitUntil(t, 10*time.Second, name+" shows the direct write", func() bool {
			return read(name).Header.Revision >= rev
		})
	}
	st2, _ := p.CoreState()
	if st2.Cache.Invalidations-st1.Cache.Invalidations != 3 {
		t.Fatalf("one write under b/ invalidated %d entries, want 3", st2.Cache.Invalidations-st1.Cache.Invalidations)
	}
	before := testutil.EtcdCalls(t, "Range")
	read("a")
	read("c keys")
	if got := testutil.EtcdCalls(t, "Range") - before; got != 2 {
		t.Fatalf("entries not touched by the write: %v Range calls reached etcd beyond the checks", got-2)
	}
}

// Count-only, keys-only, limit, sort and min/max filters get etcd's own
// answer to the same request, first forwarded and then from the cache;
// reads at a revision are forwarded, so compacted and future revisions get
// etcd's errors.
func TestCacheExactForEveryRequestShape(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	direct := pb.NewKVClient(testutil.Dial(t, m.ClientURL))
	for i := range 10 {
		if _, err := direct.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", 9-i)}); err != nil {
			t.Fatal(err)
		}
	}
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	from, to := []byte("k"), []byte("l")
	shapes := []*pb.RangeRequest{
		{Key: from, RangeEnd: to, CountOnly: true},
		{Key: from, RangeEnd: to, KeysOnly: true},
		{Key: from, RangeEnd: to, Limit: 3},
		{Key: from, RangeEnd: to, Limit: 3, SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VALUE},
		{Key: from, RangeEnd: to, SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_MOD},
		{Key: from, RangeEnd: to, MinModRevision: 4, MaxModRevision: 8},
		{Key: from, RangeEnd: to, MinCreateRevision: 6},
		{Key: from, RangeEnd: []byte{0}, Limit: 1},
		{Key: []byte("missing")},
	}
	for _, serializable := range []bool{true, false} {
		for _, s := range shapes {
			req := proto.Clone(s).(*pb.RangeRequest)
			req.Serializable = serializable
			want, err := direct.Range(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				got, err := kv.Range(ctx, proto.Clone(req).(*pb.RangeRequest))
				if err != nil {
					t.Fatal(err)
				}
				if !testutil.SameRange(got, want) || got.Header.Revision != want.Header.Revision {
					t.Fatalf("%v, read %d: %v at %d, etcd answered %v at %d", req, i, testutil.RangeString(got), got.Header.Revision, testutil.RangeString(want), want.Header.Revision)
				}
			}
		}
	}
	if st, _ := p.CoreState(); st.Cache.Hits == 0 {
		t.Fatalf("no read was answered from the cache: %+v", st.Cache)
	}

	if _, err := direct.Compact(ctx, &pb.CompactionRequest{Revision: 5, Physical: true}); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []int64{3, 100} {
		req := &pb.RangeRequest{Key: []byte("k1"), Revision: rev, Serializable: true}
		_, want := direct.Range(ctx, req)
		_, got := kv.Range(ctx, req)
		if want == nil || got == nil || got.Error() != want.Error() {
			t.Fatalf("a read at revision %d: %v, etcd answered %v", rev, got, want)
		}
	}
	if _, got := kv.Range(ctx, &pb.RangeRequest{Serializable: true}); got == nil || got.Error() != rpctypes.ErrGRPCEmptyKey.Error() {
		t.Fatalf("a read of the empty key: %v, want %v", got, rpctypes.ErrGRPCEmptyKey)
	}
}

// Linearizable reads come from the cache only once etcd's current revision
// is confirmed and delivered: each read after a direct write sees it, and
// concurrent readers share revision fetches.
func TestCacheConsistentReads(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	direct := pb.NewKVClient(testutil.Dial(t, m.ClientURL))
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	for i := range 50 {
		v := fmt.Appendf(nil, "v%d", i)
		if _, err := direct.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: v}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			got, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Kvs) != 1 || !bytes.Equal(got.Kvs[0].Value, v) {
				t.Fatalf("linearizable read after a direct write of %s: %v", v, testutil.RangeString(got))
			}
		}
	}
	st, _ := p.CoreState()
	if st.Cache.ConsistentHits == 0 {
		t.Fatalf("no linearizable read was answered from the cache: %+v", st.Cache)
	}

	// 64 readers, 20 reads each, of a key nobody writes: they cost etcd
	// far fewer reads than they make.
	before := testutil.EtcdCalls(t, "Range")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			for range 20 {
				got, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")})
				if err == nil && (len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v49") {
					err = fmt.Errorf("read %v", testutil.RangeString(got))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	calls := testutil.EtcdCalls(t, "Range") - before
	t.Logf("1280 linearizable reads by 64 readers cost etcd %v Range calls", calls)
	if calls > 1280/2 {
		t.Fatalf("1280 linearizable reads cost etcd %v Range calls", calls)
	}
}

// No connection is answered below a revision it has seen: a read right
// after a write through the same connection has the write's revision or
// later, even while the cache still holds the key's old value.
func TestCacheMonotonicPerConnection(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	read := &pb.RangeRequest{Key: []byte("k"), Serializable: true}
	if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitUntil(t, 10*time.Second, "k cached", func() bool {
		if _, err := kv.Range(ctx, read); err != nil {
			t.Fatal(err)
		}
		st, _ := p.CoreState()
		return st.Cache.Entries == 1
	})
	for i := range 200 {
		put, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: fmt.Appendf(nil, "v%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := kv.Range(ctx, read)
		if err != nil {
			t.Fatal(err)
		}
		if got.Header.Revision < put.Header.Revision {
			t.Fatalf("read %d answered at revision %d after the connection's write at %d", i, got.Header.Revision, put.Header.Revision)
		}
	}
}

// --cache-bytes=0 turns the cache off: every read reaches etcd.
func TestCacheDisabled(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 30*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.CacheBytes = 0 })
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	before := testutil.EtcdCalls(t, "Range")
	for range 10 {
		if _, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k"), Serializable: true}); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.EtcdCalls(t, "Range") - before; got != 10 {
		t.Fatalf("10 reads with the cache off: %v reached etcd", got)
	}
	if w := testutil.EtcdWatchers(t); w != 0 {
		t.Fatalf("%v watchers on etcd with the cache off", w)
	}
}

// With etcd auth, the cache never answers one identity with what another
// read: calls carrying a token go to etcd (which checks the token's
// permissions on each), a permission revoked on etcd is honoured at the
// next read, and entries filled by reads without credentials stop being
// served once auth is enabled on etcd directly: a linearizable read at
// once, a serializable read within the cache's confirmation interval.
func TestCacheNeverAcrossUsers(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	admin := testutil.Client(t, m.ClientURL) // directly on etcd
	for k, v := range map[string]string{"app/y": "1", "pub": "p"} {
		if _, err := admin.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	anon := testutil.Client(t, p.Addr())
	testutil.WaitUntil(t, 10*time.Second, "pub served from the cache", func() bool {
		r, err := anon.Get(ctx, "pub", clientv3.WithSerializable())
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("anonymous read before auth: %v %v", r, err)
		}
		st, _ := p.CoreState()
		return st.Cache.Hits > 0
	})
	// A call with a token is never answered from the cache, even one etcd
	// does not check (auth is still off): it goes to etcd.
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	st0, _ := p.CoreState()
	calls := testutil.EtcdCalls(t, "Range")
	tctx := metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, "some-token")
	if _, err := kv.Range(tctx, &pb.RangeRequest{Key: []byte("pub"), Serializable: true}); err != nil {
		t.Fatal(err)
	}
	if st, _ := p.CoreState(); st.Cache.Hits != st0.Cache.Hits || testutil.EtcdCalls(t, "Range") != calls+1 {
		t.Fatalf("a call with a token: %d cache hits, %v calls to etcd; want 0 and 1", st.Cache.Hits-st0.Cache.Hits, testutil.EtcdCalls(t, "Range")-calls)
	}

	// alice may read app/, bob may not read app/y (see authSetup).
	root := authSetup(t, ctx, m.ClientURL)
	if _, err := anon.Get(ctx, "pub"); !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Fatalf("anonymous linearizable read after auth was enabled: %v, want %v", err, rpctypes.ErrUserEmpty)
	}
	testutil.WaitUntil(t, 5*time.Second, "anonymous serializable reads refused", func() bool {
		_, err := anon.Get(ctx, "pub", clientv3.WithSerializable())
		return errors.Is(err, rpctypes.ErrUserEmpty)
	})
	for range 10 {
		if _, err := anon.Get(ctx, "pub", clientv3.WithSerializable()); !errors.Is(err, rpctypes.ErrUserEmpty) {
			t.Fatalf("anonymous serializable read once refused: %v, want %v", err, rpctypes.ErrUserEmpty)
		}
	}

	login := func(user string) *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{p.Addr()}, Username: user, Password: user + "pw", DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alice, bob := login("alice"), login("bob")
	st0, _ = p.CoreState()
	for range 5 {
		for _, opts := range [][]clientv3.OpOption{nil, {clientv3.WithSerializable()}} {
			r, err := alice.Get(ctx, "app/y", opts...)
			if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "1" {
				t.Fatalf("alice reading app/y: %v %v", r, err)
			}
			if _, err := bob.Get(ctx, "app/y", opts...); !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Fatalf("bob reading app/y after alice: %v, want %v", err, rpctypes.ErrPermissionDenied)
			}
		}
	}
	if _, err := root.RoleRevokePermission(ctx, "app", "app/", clientv3.GetPrefixRangeEnd("app/")); err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]clientv3.OpOption{nil, {clientv3.WithSerializable()}} {
		if _, err := alice.Get(ctx, "app/y", opts...); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("alice reading app/y after her permission was revoked on etcd: %v, want %v", err, rpctypes.ErrPermissionDenied)
		}
	}
	if st, _ := p.CoreState(); st.Cache.Hits != st0.Cache.Hits {
		t.Fatalf("calls with a token were answered from the cache: %d hits", st.Cache.Hits-st0.Cache.Hits)
	}
}

// With --experimental-serializable-ordering every connection keeps the
// proxy's highest revision as its floor: a serializable read on one
// connection right after a write on another is answered at the write's
// revision or later, never from a cache entry that has not seen it yet.
func TestCacheSerializableOrderingAcrossConnections(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.SerializableOrdering = true })
	writer := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	reader := pb.NewKVClient(testutil.Dial(t, p.Addr()))
	read := &pb.RangeRequest{Key: []byte("k"), Serializable: true}
	if _, err := writer.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitUntil(t, 10*time.Second, "k cached", func() bool {
		if _, err := reader.Range(ctx, read); err != nil {
			t.Fatal(err)
		}
		st, _ := p.CoreState()
		return st.Cache.Hits > 0
	})
	for i := range 200 {
		put, err := writer.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: fmt.Appendf(nil, "v%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		got, err := reader.Range(ctx, read)
		if err != nil {
			t.Fatal(err)
		}
		if got.Header.Revision < put.Header.Revision {
			t.Fatalf("read %d on another connection answered at revision %d after a write at %d", i, got.Header.Revision, put.Header.Revision)
		}
	}
}

// A connection's reads never go back in revision across a failover: the
// member in use is stopped while writes go on directly on another member
// and one connection reads, serializable and linearizable, through the
// proxy; after the move the cache serves again.
func TestCacheMonotonicAcrossFailover(t *testing.T) {
	cl, fws, eps := testutil.StartClusterBehindForwarders(t, 3)
	p := testutil.StartProxy(t, eps, nil)
	ctx := testutil.Context(t, 90*time.Second)
	writer := pb.NewKVClient(testutil.Dial(t, cl.Members[1].ClientURL))
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			_, _ = writer.Put(wctx, &pb.PutRequest{Key: fmt.Appendf(nil, "k%d", i%10), Value: fmt.Appendf(nil, "v%d", i)})
			cancel()
		}
	})
	defer func() { close(stop); wg.Wait() }()

	var seen int64
	reads, hitsAfter := 0, int64(0)
	// Each step writes one key through the connection and reads another
	// (a cached one, mostly), so the floor the write set is what keeps the
	// read from going back.
	read := func(i int) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		put, err := kv.Put(rctx, &pb.PutRequest{Key: fmt.Appendf(nil, "p%d", i%10), Value: []byte("x")})
		if err != nil {
			return // unavailable while the proxy moves
		}
		seen = max(seen, put.Header.Revision)
		resp, err := kv.Range(rctx, &pb.RangeRequest{Key: fmt.Appendf(nil, "k%d", i%10), Serializable: i%4 != 0})
		if err != nil {
			return // unavailable while the proxy moves
		}
		reads++
		if rev := resp.Header.Revision; rev < seen {
			t.Fatalf("read %d answered at revision %d after %d on the same connection", i, rev, seen)
		} else {
			seen = rev
		}
	}
	for i := range 400 {
		read(i)
	}
	cl.Members[0].Stop()
	testutil.WaitUntil(t, 20*time.Second, "the proxy moved off the stopped member", func() bool {
		read(0)
		return p.UpstreamMember() != fws[0].Addr()
	})
	st0, _ := p.CoreState()
	testutil.WaitUntil(t, 20*time.Second, "the cache serving again after the move", func() bool {
		for i := range 50 {
			read(i)
		}
		st, _ := p.CoreState()
		hitsAfter = st.Cache.Hits - st0.Cache.Hits
		return hitsAfter > 0
	})
	t.Logf("%d reads, none below a revision already seen; %d cache hits after the move", reads, hitsAfter)
}

// A lease revoked through the proxy deletes its keys, and the connection
// that revoked it reads them gone at once, as it would on etcd: the
// revoke's revision raises the connection's floor like a write's, so a
// cached answer from before the delete is not served to it.
func TestCacheReadsYourRevoke(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	conn := testutil.Dial(t, p.Addr())
	kv, lease := pb.NewKVClient(conn), pb.NewLeaseClient(conn)
	for i := range 30 {
		key := []byte(fmt.Sprintf("revoked/%d", i))
		g, err := lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 60})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: []byte("v"), Lease: g.ID}); err != nil {
			t.Fatal(err)
		}
		st0, _ := p.CoreState()
		testutil.WaitUntil(t, 10*time.Second, "the key's read answered from the cache", func() bool {
			if _, err := kv.Range(ctx, &pb.RangeRequest{Key: key, Serializable: true}); err != nil {
				t.Fatal(err)
			}
			st, _ := p.CoreState()
			return st.Cache.Hits > st0.Cache.Hits
		})
		if _, err := lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: g.ID}); err != nil {
			t.Fatal(err)
		}
		resp, err := kv.Range(ctx, &pb.RangeRequest{Key: key, Serializable: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 0 {
			t.Fatalf("round %d: the key of a lease the connection revoked is still read: %v", i, testutil.RangeString(resp))
		}
	}
}
