package shell_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

func createReq(key string) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}
}

// --max-watches-per-stream: a create beyond the limit is refused, created
// and cancelled at once with a reason that names the flag; the stream and
// its watches go on, a cancel makes room, and other streams have limits of
// their own.
func TestMaxWatchesPerStream(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.MaxWatchesPerStream = 3 })
	ctx := testutil.Context(t, 30*time.Second)
	conn := testutil.Dial(t, p.Addr())
	st, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	create := func(key string) *pb.WatchResponse {
		t.Helper()
		if err := st.Send(createReq(key)); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil || !r.Created {
			t.Fatalf("create %s: %v %v", key, r, err)
		}
		return r
	}
	for i := range 3 {
		if r := create(fmt.Sprint("k", i)); r.Canceled {
			t.Fatalf("watch %d within the limit refused: %v", i, r)
		}
	}
	r := create("k3")
	if !r.Canceled || r.WatchId != -1 || !strings.Contains(r.CancelReason, "--max-watches-per-stream=3") {
		t.Fatalf("the fourth watch: %v, want it refused with a reason naming --max-watches-per-stream=3", r)
	}
	// The watches held go on.
	if _, err := pb.NewKVClient(testutil.Dial(t, m.ClientURL)).Put(ctx, &pb.PutRequest{Key: []byte("k1"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.WatchId != 1 || len(r.Events) != 1 {
		t.Fatalf("an event for watch 1 after the refusal: %v %v", r, err)
	}
	// A cancel makes room.
	if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 0}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || !r.Canceled || r.WatchId != 0 {
		t.Fatalf("cancel: %v %v", r, err)
	}
	if r := create("k4"); r.Canceled {
		t.Fatalf("a watch after a cancel made room: %v", r)
	}
	// Another stream on the same connection has room of its own.
	other, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Send(createReq("k0")); err != nil {
		t.Fatal(err)
	}
	if r, err := other.Recv(); err != nil || !r.Created || r.Canceled {
		t.Fatalf("another stream's first watch: %v %v", r, err)
	}
}

// --max-streams-per-connection: a stream beyond the limit on one client
// connection is refused with ResourceExhausted naming the flag; another
// connection is not affected, and a closed stream makes room.
func TestMaxStreamsPerConnection(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) { c.MaxStreamsPerConnection = 2 })
	ctx := testutil.Context(t, 30*time.Second)
	conn := testutil.Dial(t, p.Addr())
	open := func(ctx context.Context, wc pb.WatchClient) (pb.Watch_WatchClient, error) {
		st, err := wc.Watch(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(createReq("k")); err != nil {
			return nil, err
		}
		if _, err := st.Recv(); err != nil {
			return nil, err
		}
		return st, nil
	}
	wc := pb.NewWatchClient(conn)
	first, cancelFirst := context.WithCancel(ctx)
	if _, err := open(first, wc); err != nil {
		t.Fatal(err)
	}
	if _, err := open(ctx, wc); err != nil {
		t.Fatal(err)
	}
	_, err := open(ctx, wc)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-streams-per-connection=2") {
		t.Fatalf("a third stream on the connection: %v, want ResourceExhausted naming --max-streams-per-connection=2", err)
	}
	if _, err := open(ctx, pb.NewWatchClient(testutil.Dial(t, p.Addr()))); err != nil {
		t.Fatalf("a stream on another connection: %v", err)
	}
	cancelFirst()
	testutil.WaitUntil(t, 10*time.Second, "room for a stream once one closed", func() bool {
		_, err := open(ctx, wc)
		return err == nil
	})
}
