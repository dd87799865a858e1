package shell_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/netfault"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// TestNoClusterYet starts the proxy with no etcd member reachable: it must
// start anyway, answer requests with Unavailable before the client's
// deadline instead of hanging, and serve as soon as a member comes up,
// without a restart.
func TestNoClusterYet(t *testing.T) {
	clientAddr, err := embedetcd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p := testutil.StartProxy(t, []string{"http://" + clientAddr}, nil)
	kv := pb.NewKVClient(testutil.Dial(t, p.Addr()))

	for _, deadline := range []time.Duration{500 * time.Millisecond, 3 * time.Second} {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		start := time.Now()
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a")})
		took := time.Since(start)
		cancel()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("deadline %v: got %v after %v, want Unavailable", deadline, err, took)
		}
		if took >= deadline {
			t.Errorf("deadline %v: answer took %v", deadline, took)
		}
		t.Logf("deadline %v: %v after %v", deadline, status.Convert(err).Message(), took)
	}

	// A watch asked for while no member is up is created once one is, and
	// then gets events. (clientv3's Watch returns only once the watch is
	// created, so it is asked for on a goroutine.)
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	wc := testutil.Client(t, p.Addr())
	watched := make(chan clientv3.WatchChan, 1)
	go func() { watched <- wc.Watch(wctx, "w") }()

	peerAddr, err := embedetcd.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	m, err := embedetcd.StartMember("late", t.TempDir(), "http://"+clientAddr, "http://"+peerAddr, embedetcd.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	up := time.Now()
	// Until then, every failed put is one a client can retry: Unavailable
	// (the proxy's answer when no member answers in time), nothing else.
	failures := map[codes.Code]int{}
	testutil.WaitUntil(t, 10*time.Second, "a put through the proxy after etcd came up", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("v")})
		if err != nil {
			failures[status.Code(err)]++
		}
		return err == nil
	})
	t.Logf("first successful put %v after etcd came up; failures before it: %v", time.Since(up), failures)
	for code, n := range failures {
		if code != codes.Unavailable {
			t.Errorf("%d puts failed with %v while etcd came up, want only Unavailable", n, code)
		}
	}
	var wch clientv3.WatchChan
	select {
	case wch = <-watched:
	case <-wctx.Done():
		t.Fatal("a watch asked for before etcd was up was never created")
	}
	t.Logf("watch created %v after etcd came up", time.Since(up))
	if _, err := kv.Put(testutil.Context(t, 5*time.Second), &pb.PutRequest{Key: []byte("w"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if wr := <-wch; wr.Err() != nil || len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != "w" {
		t.Fatalf("watch asked for before etcd was up: got %+v, want the put of w", wr)
	}
}

// TestSlowCallKeepsTheClientsDeadline: while a member is connected, a call
// that is merely slow ends as it does on etcd, with the client's own
// DeadlineExceeded, not an answer of the proxy's a little before it (etcd's
// e2e TestWatchDelayForEvent tells the two apart). The one member is made
// silent, so nothing answers and nowhere is better.
func TestSlowCallKeepsTheClientsDeadline(t *testing.T) {
	m := testutil.StartMember(t)
	fw, err := netfault.Start(strings.TrimPrefix(m.ClientURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	p := testutil.StartProxy(t, []string{"http://" + fw.Addr()}, nil)
	viaProxy := testutil.Client(t, p.Addr())
	direct := testutil.Client(t, "http://"+fw.Addr())
	ctx := testutil.Context(t, 30*time.Second)
	for _, c := range []*clientv3.Client{viaProxy, direct} {
		if _, err := c.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
	}
	fw.Silence()
	defer fw.Resume()
	for name, c := range map[string]*clientv3.Client{"proxy": viaProxy, "direct": direct} {
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := c.Put(rctx, "k", "v2")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("%s: a put to a silent member ended with %v, want the client's deadline", name, err)
		}
	}
}
