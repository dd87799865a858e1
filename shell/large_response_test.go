package shell_test

import (
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// TestLargeResponses: a Range answer larger than gRPC's default 4 MiB
// message limit goes through the proxy whole, as from etcd directly (etcd's
// own e2e watch-delay tests read 5 MB per Get through the proxy). Up to
// --max-recv-bytes, which defaults to 2 GiB − 1 as in etcd's proxy; a
// smaller setting refuses larger answers with ResourceExhausted, and one
// below --max-send-bytes stops the proxy at start, as it stops etcd's.
func TestLargeResponses(t *testing.T) {
	m := testutil.StartMember(t)
	ctx := testutil.Context(t, 60*time.Second)
	direct := pb.NewKVClient(testutil.Dial(t, m.ClientURL))
	value := []byte(strings.Repeat("v", 1<<20))
	for i := 0; i < 5; i++ {
		if _, err := direct.Put(ctx, &pb.PutRequest{Key: []byte{'k', byte('0' + i)}, Value: value}); err != nil {
			t.Fatal(err)
		}
	}
	all := &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}
	big := grpc.MaxCallRecvMsgSize(1 << 30) // the test's own client takes it all
	want, err := direct.Range(ctx, all, big)
	if err != nil {
		t.Fatal(err)
	}
	if n := proto.Size(want); n <= 4<<20 {
		t.Fatalf("the answer is only %d bytes; the test needs more than 4 MiB", n)
	}

	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	got, err := pb.NewKVClient(testutil.Dial(t, p.Addr())).Range(ctx, all, big)
	if err != nil {
		t.Fatalf("a %d-byte Range through the proxy: %v", proto.Size(want), err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("the proxy's answer differs from etcd's (%d and %d bytes)", proto.Size(got), proto.Size(want))
	}

	small := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.MaxRecvBytes = 2 << 20 })
	_, err = pb.NewKVClient(testutil.Dial(t, small.Addr())).Range(ctx, all, big)
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("with --max-recv-bytes=2MiB, a %d-byte answer: %v, want ResourceExhausted", proto.Size(want), err)
	}

	cfg := shell.DefaultConfig()
	cfg.MaxRecvBytes = 1 << 20
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--max-recv-bytes") {
		t.Errorf("--max-recv-bytes below --max-send-bytes: %v, want an error naming --max-recv-bytes", err)
	}
}
