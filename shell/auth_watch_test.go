package shell_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/netfault"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// authSetup enables auth on etcd (directly on the member) with root, alice
// (read on app/) and bob (read on b/ and on the key app/x), and returns
// root's client on the member.
func authSetup(t *testing.T, ctx context.Context, memberURL string) *clientv3.Client {
	t.Helper()
	admin := testutil.Client(t, memberURL)
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "app"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "app", "app/", clientv3.GetPrefixRangeEnd("app/"), clientv3.PermissionType(authpb.READ))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "alice", "alicepw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "alice", "app"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "b"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "b", "b/", clientv3.GetPrefixRangeEnd("b/"), clientv3.PermissionType(authpb.READ))
			return err
		},
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "b", "app/x", "", clientv3.PermissionType(authpb.READ))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "bob", "bobpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "bob", "b"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: []string{memberURL}, Username: "root", Password: "rootpw", DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = root.AuthDisable(context.Background())
		root.Close()
	})
	return root
}

// tokenFor authenticates user (password user+"pw") at endpoint.
func tokenFor(t *testing.T, ctx context.Context, conn *grpc.ClientConn, user string) string {
	t.Helper()
	r, err := pb.NewAuthClient(conn).Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: user + "pw"})
	if err != nil {
		t.Fatal(err)
	}
	return r.Token
}

// watchAs opens a raw watch stream with token and creates one watch on key.
func watchAs(t *testing.T, ctx context.Context, conn *grpc.ClientConn, token, key string) pb.Watch_WatchClient {
	t.Helper()
	st, err := pb.NewWatchClient(conn).Watch(metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, token))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}); err != nil {
		t.Fatal(err)
	}
	return st
}

// expectCreated reads a watch stream's created response and fails the
// test if etcd (or the proxy) refused the watch; what names it.
func expectCreated(t *testing.T, st pb.Watch_WatchClient, what string) {
	t.Helper()
	if r := recvCreated(t, st); r.Canceled {
		t.Fatalf("%s: %v", what, r)
	}
}

// recvCreated reads a watch stream's created response.
func recvCreated(t *testing.T, st pb.Watch_WatchClient) *pb.WatchResponse {
	t.Helper()
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !r.Created {
		t.Fatalf("first response %v, want created", r)
	}
	return r
}

// Watch streams with a token go through the watch machine: streams with
// the same token share one upstream watcher per range, opened with that
// token, and each gets what a direct watch with the token gets: the
// events it may read, and etcd's own refusal where it may not.
func TestAuthWatchesCoalescedPerToken(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	root := authSetup(t, ctx, m.ClientURL)
	proxy, direct := testutil.Dial(t, p.Addr()), testutil.Dial(t, m.ClientURL)
	alice, bob := tokenFor(t, ctx, proxy, "alice"), tokenFor(t, ctx, proxy, "bob")

	before := testutil.EtcdWatchers(t)
	var aliceStreams []pb.Watch_WatchClient
	for range 20 {
		st := watchAs(t, ctx, proxy, alice, "app/x")
		expectCreated(t, st, "alice's watch on app/x through the proxy")
		aliceStreams = append(aliceStreams, st)
	}
	bobOK := watchAs(t, ctx, proxy, bob, "b/y")
	expectCreated(t, bobOK, "bob's watch on b/y through the proxy")
	// bob may not read the rest of app/: etcd's refusal, as a direct
	// watch gets it.
	want := recvCreated(t, watchAs(t, ctx, direct, tokenFor(t, ctx, direct, "bob"), "app/z"))
	got := recvCreated(t, watchAs(t, ctx, proxy, bob, "app/z"))
	if !want.Canceled || got.Canceled != want.Canceled || got.CancelReason != want.CancelReason {
		t.Fatalf("bob's watch on app/z: through the proxy %v, directly %v", got, want)
	}
	// Overlapping ranges of two users: alice's prefix app/ and bob's key
	// app/x, each in its own lane.
	alicePrefix, err := pb.NewWatchClient(proxy).Watch(metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, alice))
	if err != nil {
		t.Fatal(err)
	}
	if err := alicePrefix.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("app/"), RangeEnd: []byte("app0")}}}); err != nil {
		t.Fatal(err)
	}
	expectCreated(t, alicePrefix, "alice's watch on app/")
	bobX := watchAs(t, ctx, proxy, bob, "app/x")
	expectCreated(t, bobX, "bob's watch on app/x")
	testutil.WaitUntil(t, 10*time.Second, "one etcd watcher per token and range", func() bool {
		return testutil.EtcdWatchers(t)-before == 4
	})

	put, err := root.Put(ctx, "app/x", "1")
	if err != nil {
		t.Fatal(err)
	}
	putZ, err := root.Put(ctx, "app/z", "3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.Put(ctx, "b/y", "2"); err != nil {
		t.Fatal(err)
	}
	for i, st := range aliceStreams {
		r, err := st.Recv()
		if err != nil || len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "app/x" || r.Events[0].Kv.ModRevision != put.Header.Revision {
			t.Fatalf("alice's stream %d: %v %v, want the put of app/x", i, r, err)
		}
	}
	var revs []int64
	for len(revs) < 2 {
		r, err := alicePrefix.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range r.Events {
			revs = append(revs, ev.Kv.ModRevision)
		}
	}
	if len(revs) != 2 || revs[0] != put.Header.Revision || revs[1] != putZ.Header.Revision {
		t.Fatalf("alice's watch on app/: events at %v, want %d and %d", revs, put.Header.Revision, putZ.Header.Revision)
	}
	if r, err := bobX.Recv(); err != nil || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != put.Header.Revision {
		t.Fatalf("bob's watch on app/x: %v %v", r, err)
	}
	if r, err := bobOK.Recv(); err != nil || len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "b/y" {
		t.Fatalf("bob's watch on b/y: %v %v, want the put of b/y and not app/z", r, err)
	}
}

// Across a restart of the member (which loses every simple token), and
// after a permission revoked on etcd, a client watching through the proxy
// gets what a client watching directly gets: its watch resumes, with a
// fresh token, exactly after the last event it had; and once its
// permission is gone, the watch ends with etcd's own error.
func TestAuthWatchAcrossRestart(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 90*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	authSetup(t, ctx, m.ClientURL)
	login := func(ep string) *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Username: "alice", Password: "alicepw", DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	viaProxy, direct := login(p.Addr()), login(m.ClientURL)
	root := func() *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, Username: "root", Password: "rootpw", DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	admin := root()
	put := func(v string) int64 {
		t.Helper()
		for {
			r, err := admin.Put(ctx, "app/x", v)
			if err == nil {
				return r.Header.Revision
			}
			if ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // the member restarting
		}
	}
	start := put("0") + 1
	wp := viaProxy.Watch(ctx, "app/x", clientv3.WithRev(start))
	wd := direct.Watch(ctx, "app/x", clientv3.WithRev(start))
	// next returns the revision of the next event on w, or the error that
	// ended it.
	next := func(name string, w clientv3.WatchChan) (int64, error) {
		t.Helper()
		for {
			select {
			case wr, ok := <-w:
				if !ok {
					return 0, errors.New("watch channel closed")
				}
				if err := wr.Err(); err != nil {
					return 0, err
				}
				if len(wr.Events) > 0 {
					return wr.Events[0].Kv.ModRevision, nil
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%s: no event or error for 20 s", name)
			}
		}
	}
	r1 := put("1")
	for name, w := range map[string]clientv3.WatchChan{"proxy": wp, "direct": wd} {
		if rev, err := next(name, w); err != nil || rev != r1 {
			t.Fatalf("%s watch: %d %v, want the put at %d", name, rev, err, r1)
		}
	}

	// The member restarts: every simple token is gone.
	m.Stop()
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	admin.Close()
	admin = root()
	defer admin.Close()
	r2 := put("2")
	for name, w := range map[string]clientv3.WatchChan{"proxy": wp, "direct": wd} {
		if rev, err := next(name, w); err != nil || rev != r2 {
			t.Fatalf("%s watch after the restart: %d %v, want the put at %d and nothing in between", name, rev, err, r2)
		}
	}

	// Her permission is revoked, and the member restarts again: both
	// watches end with etcd's refusal.
	if _, err := admin.RoleRevokePermission(ctx, "app", "app/", clientv3.GetPrefixRangeEnd("app/")); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	_, errProxy := next("proxy", wp)
	_, errDirect := next("direct", wd)
	if errDirect == nil || errProxy == nil || errProxy.Error() != errDirect.Error() {
		t.Fatalf("after the revoke and a restart: through the proxy %v, directly %v", errProxy, errDirect)
	}
}

// Tokens that expire, simple (a short --auth-token-ttl) and JWT: a watch
// through the proxy with a token gets what a direct watch with the same
// token gets, before and after the token expires: etcd does not check a
// watch again once created, and refuses a new one.
func TestAuthWatchTokenExpiry(t *testing.T) {
	for _, kind := range []string{"simple", "jwt"} {
		t.Run(kind, func(t *testing.T) {
			m := testutil.StartMemberWith(t, embedetcd.Options{Configure: func(c *embed.Config) {
				switch kind {
				case "simple":
					c.AuthToken, c.AuthTokenTTL = "simple", 2
				case "jwt":
					priv, pub := jwtKeys(t)
					c.AuthToken = fmt.Sprintf("jwt,pub-key=%s,priv-key=%s,sign-method=RS256,ttl=2s", pub, priv)
				}
			}})
			ctx := testutil.Context(t, 60*time.Second)
			p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
			root := authSetup(t, ctx, m.ClientURL)
			proxy, direct := testutil.Dial(t, p.Addr()), testutil.Dial(t, m.ClientURL)
			token := tokenFor(t, ctx, proxy, "alice")

			viaProxy, viaDirect := watchAs(t, ctx, proxy, token, "app/x"), watchAs(t, ctx, direct, token, "app/x")
			for name, st := range map[string]pb.Watch_WatchClient{"proxy": viaProxy, "direct": viaDirect} {
				expectCreated(t, st, name)
			}
			expect := func(what string, want func(*pb.WatchResponse) bool) {
				t.Helper()
				var got [2]*pb.WatchResponse
				for i, st := range []pb.Watch_WatchClient{viaProxy, viaDirect} {
					r, err := st.Recv()
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					got[i] = r
				}
				if !want(got[0]) || !want(got[1]) {
					t.Fatalf("%s: through the proxy %v, directly %v", what, got[0], got[1])
				}
			}
			put := func(key string) int64 {
				r, err := root.Put(ctx, key, "v")
				if err != nil {
					t.Fatal(err)
				}
				return r.Header.Revision
			}
			r1 := put("app/x")
			expect("an event before expiry", func(r *pb.WatchResponse) bool {
				return len(r.Events) == 1 && r.Events[0].Kv.ModRevision == r1
			})

			time.Sleep(3 * time.Second) // the token expires (TTL 2 s, not used since)
			r2 := put("app/x")
			expect("an event after expiry", func(r *pb.WatchResponse) bool {
				return len(r.Events) == 1 && r.Events[0].Kv.ModRevision == r2
			})
			for _, st := range []pb.Watch_WatchClient{viaProxy, viaDirect} {
				if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("app/y")}}}); err != nil {
					t.Fatal(err)
				}
			}
			var reasons []string
			expect("a create after expiry", func(r *pb.WatchResponse) bool {
				reasons = append(reasons, r.CancelReason)
				return r.Created && r.Canceled && r.CancelReason != ""
			})
			if reasons[0] != reasons[1] {
				t.Fatalf("a create after expiry refused through the proxy with %q, directly with %q", reasons[0], reasons[1])
			}
		})
	}
}

// jwtKeys writes an RSA key pair for etcd's JWT tokens and returns the
// private and public key files.
func jwtKeys(t *testing.T) (priv, pub string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "jwt.key"), filepath.Join(dir, "jwt.pub")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// After a client's permission is revoked, its existing watch goes on and
// its progress requests are answered, through the proxy as directly
// (etcd checks nothing for a progress request; the proxy, which cannot
// read the revision with that token any more, asks etcd for progress).
func TestAuthProgressAfterRevoke(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	root := authSetup(t, ctx, m.ClientURL)
	proxy, direct := testutil.Dial(t, p.Addr()), testutil.Dial(t, m.ClientURL)
	token := tokenFor(t, ctx, direct, "alice")
	streams := map[string]pb.Watch_WatchClient{"proxy": watchAs(t, ctx, proxy, token, "app/x"), "direct": watchAs(t, ctx, direct, token, "app/x")}
	for name, st := range streams {
		expectCreated(t, st, name)
	}
	if _, err := root.RoleRevokePermission(ctx, "app", "app/", clientv3.GetPrefixRangeEnd("app/")); err != nil {
		t.Fatal(err)
	}
	put, err := root.Put(ctx, "app/x", "after")
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range streams {
		if r, err := st.Recv(); err != nil || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != put.Header.Revision {
			t.Fatalf("%s: after the revoke: %v %v, want the put (etcd checks a watch only when it creates it)", name, r, err)
		}
		if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil || r.WatchId != -1 || r.Created || r.Canceled || r.Header.GetRevision() < put.Header.Revision {
			t.Fatalf("%s: progress after the revoke: %v %v, want an answer at %d or later", name, r, err, put.Header.Revision)
		}
	}
}

// Tokens etcd issued through the proxy are known by their user: streams of
// one user share one upstream watcher per range whatever token each
// carries; a token the proxy did not see issued shares only with itself.
func TestAuthWatchesCoalescedPerUser(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	root := authSetup(t, ctx, m.ClientURL)
	proxy, direct := testutil.Dial(t, p.Addr()), testutil.Dial(t, m.ClientURL)

	before := testutil.EtcdWatchers(t)
	var streams []pb.Watch_WatchClient
	tokens := map[string]bool{}
	for range 20 {
		tok := tokenFor(t, ctx, proxy, "alice") // a token of her own for each stream
		tokens[tok] = true
		st := watchAs(t, ctx, proxy, tok, "app/x")
		expectCreated(t, st, "alice's watch")
		streams = append(streams, st)
	}
	if len(tokens) != 20 {
		t.Fatalf("etcd issued %d distinct tokens for 20 logins; the test needs 20", len(tokens))
	}
	testutil.WaitUntil(t, 10*time.Second, "one etcd watcher for 20 tokens of one user", func() bool {
		return testutil.EtcdWatchers(t)-before == 1
	})
	// A token issued directly by etcd: the proxy cannot tell whose it is.
	other := watchAs(t, ctx, proxy, tokenFor(t, ctx, direct, "alice"), "app/x")
	expectCreated(t, other, "alice's watch with a token issued directly")
	testutil.WaitUntil(t, 10*time.Second, "one more etcd watcher for a token of unknown user", func() bool {
		return testutil.EtcdWatchers(t)-before == 2
	})
	put, err := root.Put(ctx, "app/x", "1")
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range append(streams, other) {
		if r, err := st.Recv(); err != nil || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != put.Header.Revision {
			t.Fatalf("stream %d: %v %v, want the put", i, r, err)
		}
	}
}

// Two streams of one user through one proxy share the user's upstream
// watch, opened with the first stream's token. That token expires, and
// the upstream connection breaks: etcd refuses the expired token on the
// re-create. The stream carrying it ends with Unavailable (its client
// comes back with a fresh token), and the group goes on under the other
// stream's token: that stream misses nothing.
func TestAuthLaneGoesOnUnderAnotherToken(t *testing.T) {
	priv, pub := jwtKeys(t)
	m := testutil.StartMemberWith(t, embedetcd.Options{Configure: func(c *embed.Config) {
		c.AuthToken = fmt.Sprintf("jwt,pub-key=%s,priv-key=%s,sign-method=RS256,ttl=4s", pub, priv)
	}})
	fw, err := netfault.Start(strings.TrimPrefix(m.ClientURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	ctx := testutil.Context(t, 60*time.Second)
	p := testutil.StartProxy(t, []string{"http://" + fw.Addr()}, nil)
	root := authSetup(t, ctx, m.ClientURL)
	proxy := testutil.Dial(t, p.Addr())

	first := watchAs(t, ctx, proxy, tokenFor(t, ctx, proxy, "alice"), "app/x")
	expectCreated(t, first, "first stream")
	time.Sleep(4500 * time.Millisecond) // the first token expires (JWT, 4 s)
	second := watchAs(t, ctx, proxy, tokenFor(t, ctx, proxy, "alice"), "app/x")
	expectCreated(t, second, "second stream")
	fw.Cut()

	if _, err := first.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the stream with the expired token: %v, want Unavailable", err)
	}
	// Written after the break, maybe before the group's watch is created
	// again: it starts where the group stood.
	put, err := root.Put(ctx, "app/x", "after")
	if err != nil {
		t.Fatal(err)
	}
	r, err := second.Recv()
	if err != nil || len(r.Events) != 1 || r.Events[0].Kv.ModRevision != put.Header.Revision {
		t.Fatalf("the stream with the valid token after the break: %v %v, want the put at %d", r, err, put.Header.Revision)
	}
}
