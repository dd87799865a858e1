package shell_test

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/shell/etcdtest"
)

// TestNoClusterYet starts the proxy with no etcd member reachable: it must
// start anyway, answer requests with Unavailable before the client's
// deadline instead of hanging, and serve as soon as a member comes up,
// without a restart.
func TestNoClusterYet(t *testing.T) {
	clientAddr, err := etcdtest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, []string{"http://" + clientAddr}, nil)
	kv := pb.NewKVClient(rawConn(t, p.Addr()))

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

	peerAddr, err := etcdtest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	m, err := etcdtest.StartMember("late", t.TempDir(), "http://"+clientAddr, "http://"+peerAddr, etcdtest.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	up := time.Now()
	var lastErr error
	eventually(t, 10*time.Second, "a put through the proxy after etcd came up", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, lastErr = kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("v")})
		return lastErr == nil
	})
	t.Logf("first successful put %v after etcd came up", time.Since(up))
	if lastErr != nil && !errors.Is(lastErr, context.DeadlineExceeded) {
		t.Fatal(lastErr)
	}
}
