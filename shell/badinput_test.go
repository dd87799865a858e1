package shell_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/internal/rawcodec"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// badInput is one hostile or careless request, made the same way to the
// proxy and to etcd; what answers it returns, without the header.
type badInput struct {
	name string
	call func(ctx context.Context, conn *grpc.ClientConn) string
}

// answer describes a unary answer: the gRPC code and message, or the
// response without its header.
func answer[R interface{ GetHeader() *pb.ResponseHeader }](r R, err error) string {
	if err != nil {
		s, _ := status.FromError(err)
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	desc := fmt.Sprint(r)
	if h := r.GetHeader(); h != nil {
		desc = strings.Replace(desc, h.String(), "", 1)
	}
	return "OK " + strings.Join(strings.Fields(desc), " ")
}

// watchAnswers opens a watch stream, sends reqs, then a create of a
// sentinel watch (ID 999), and describes every response before the
// sentinel's created (IDs, flags and reasons, not revisions): creates are
// answered in order, by etcd and the proxy alike.
func watchAnswers(ctx context.Context, conn *grpc.ClientConn, reqs ...*pb.WatchRequest) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		return "open: " + err.Error()
	}
	for _, r := range append(reqs, watchCreate(&pb.WatchCreateRequest{Key: []byte("sentinel"), WatchId: 999})) {
		if err := st.Send(r); err != nil {
			return "send: " + err.Error()
		}
	}
	var out []string
	for {
		r, err := st.Recv()
		if err != nil {
			return strings.Join(append(out, "error "+status.Code(err).String()), "; ")
		}
		if r.WatchId == 999 && r.Created {
			if len(out) == 0 {
				return "(nothing)"
			}
			return strings.Join(out, "; ")
		}
		out = append(out, fmt.Sprintf("id=%d created=%v canceled=%v reason=%q events=%d", r.WatchId, r.Created, r.Canceled, r.CancelReason, len(r.Events)))
	}
}

func watchCreate(c *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
}

// Hostile and careless requests to every service get etcd's own answer
// (compared with etcd in the same test), and a client that sends them does
// not hurt a well-behaved one: a canary watching through the same proxy
// sees every write made between the cases, in order, and after the matrix
// a new watch and a write still work. The table the test logs is EVAL.md's
// bad-input matrix.
func TestBadInputMatrix(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	ctx := testutil.Context(t, 60*time.Second)
	proxy, direct := testutil.Dial(t, p.Addr()), testutil.Dial(t, m.ClientURL)
	if _, err := pb.NewKVClient(direct).Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	many := make([]*pb.RequestOp, 129)
	for i := range many {
		many[i] = &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(fmt.Sprint("t", i))}}}
	}
	dup := []*pb.RequestOp{
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("d")}}},
		{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("d")}}},
	}
	kv := func(c *grpc.ClientConn) pb.KVClient { return pb.NewKVClient(c) }
	lease := func(c *grpc.ClientConn) pb.LeaseClient { return pb.NewLeaseClient(c) }
	cases := []badInput{
		{"Range without a key", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Range(ctx, &pb.RangeRequest{}))
		}},
		{"Range at a future revision", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Range(ctx, &pb.RangeRequest{Key: []byte("k"), Revision: 1 << 40}))
		}},
		{"Range at a negative revision", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Range(ctx, &pb.RangeRequest{Key: []byte("k"), Revision: -5}))
		}},
		{"Range with an inverted range", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Range(ctx, &pb.RangeRequest{Key: []byte("z"), RangeEnd: []byte("a")}))
		}},
		{"Range with a negative limit", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Range(ctx, &pb.RangeRequest{Key: []byte("k"), Limit: -1}))
		}},
		{"Put without a key", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Put(ctx, &pb.PutRequest{Value: []byte("v")}))
		}},
		{"Put of 2 MiB (above the 1.5 MiB request limit)", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: make([]byte, 2<<20)}))
		}},
		{"Put with a lease that does not exist", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), Lease: 0x7eadbeef}))
		}},
		{"Put with ignore_value on a missing key", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Put(ctx, &pb.PutRequest{Key: []byte("missing"), IgnoreValue: true}))
		}},
		{"DeleteRange with an inverted range", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("z"), RangeEnd: []byte("a")}))
		}},
		{"Txn of 129 operations", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Txn(ctx, &pb.TxnRequest{Success: many}))
		}},
		{"Txn putting one key twice", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Txn(ctx, &pb.TxnRequest{Success: dup}))
		}},
		{"Compact at a future revision", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(kv(c).Compact(ctx, &pb.CompactionRequest{Revision: 1 << 40}))
		}},
		{"LeaseGrant with a TTL above the maximum", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(lease(c).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 1 << 40}))
		}},
		{"LeaseRevoke of a lease that does not exist", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(lease(c).LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: 0x7eadbeef}))
		}},
		{"LeaseTimeToLive of a lease that does not exist", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(lease(c).LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: 0x7eadbeef}))
		}},
		{"LeaseKeepAlive of a lease that does not exist", func(ctx context.Context, c *grpc.ClientConn) string {
			st, err := lease(c).LeaseKeepAlive(ctx)
			if err != nil {
				return err.Error()
			}
			if err := st.Send(&pb.LeaseKeepAliveRequest{ID: 0x7eadbeef}); err != nil {
				return err.Error()
			}
			return answer(st.Recv())
		}},
		{"Watch with an inverted range", func(ctx context.Context, c *grpc.ClientConn) string {
			return watchAnswers(ctx, c, watchCreate(&pb.WatchCreateRequest{Key: []byte("z"), RangeEnd: []byte("a")}))
		}},
		{"Watch from a negative revision", func(ctx context.Context, c *grpc.ClientConn) string {
			return watchAnswers(ctx, c, watchCreate(&pb.WatchCreateRequest{Key: []byte("k"), StartRevision: -1}))
		}},
		{"Watch with a duplicate watch ID", func(ctx context.Context, c *grpc.ClientConn) string {
			return watchAnswers(ctx, c, watchCreate(&pb.WatchCreateRequest{Key: []byte("k"), WatchId: 7}), watchCreate(&pb.WatchCreateRequest{Key: []byte("j"), WatchId: 7}))
		}},
		{"Watch cancel of IDs never created", func(ctx context.Context, c *grpc.ClientConn) string {
			return watchAnswers(ctx, c,
				&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 42}}},
				&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: -1}}})
		}},
		{"Watch progress request on a stream without watches", func(ctx context.Context, c *grpc.ClientConn) string {
			return progressWithoutWatches(ctx, c)
		}},
		{"Watch with an unknown filter", func(ctx context.Context, c *grpc.ClientConn) string {
			return watchAnswers(ctx, c, watchCreate(&pb.WatchCreateRequest{Key: []byte("k"), Filters: []pb.WatchCreateRequest_FilterType{9}}))
		}},
		{"Authenticate while auth is off", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(pb.NewAuthClient(c).Authenticate(ctx, &pb.AuthenticateRequest{Name: "root", Password: "x"}))
		}},
		{"MemberRemove of a member that does not exist", func(ctx context.Context, c *grpc.ClientConn) string {
			return answer(pb.NewClusterClient(c).MemberRemove(ctx, &pb.MemberRemoveRequest{ID: 0x7eadbeef}))
		}},
		{"Malformed protobuf to Range", func(ctx context.Context, c *grpc.ClientConn) string {
			in, out := []byte{0xff, 0xff, 0xff, 0x0f, 0x0a}, []byte(nil)
			err := c.Invoke(ctx, "/etcdserverpb.KV/Range", &in, &out, grpc.ForceCodec(rawcodec.Codec{}))
			return fmt.Sprint(status.Code(err))
		}},
	}
	// A well-behaved client beside the hostile one: a watch through the
	// same proxy, and a write after every case.
	canary := testutil.Client(t, p.Addr())
	cch := canary.Watch(ctx, "canary", clientv3.WithCreatedNotify())
	<-cch
	writer := pb.NewKVClient(direct)
	var revs []int64
	var table []string
	for _, c := range cases {
		got, want := c.call(ctx, proxy), c.call(ctx, direct)
		r, err := writer.Put(ctx, &pb.PutRequest{Key: []byte("canary"), Value: []byte(c.name)})
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
		table = append(table, fmt.Sprintf("| %s | %s | %s |", c.name, got, want))
		if got != want {
			t.Errorf("%s:\n proxy: %s\n  etcd: %s", c.name, got, want)
		}
	}
	t.Logf("bad-input matrix:\n| input | proxy | etcd |\n|---|---|---|\n%s", strings.Join(table, "\n"))
	var seen []int64
	for len(seen) < len(revs) {
		r, ok := <-cch
		if !ok || r.Err() != nil {
			t.Fatalf("the canary's watch ended after %d events: %v", len(seen), r.Err())
		}
		for _, ev := range r.Events {
			seen = append(seen, ev.Kv.ModRevision)
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(revs) {
		t.Fatalf("the canary saw %v, want every write %v", seen, revs)
	}

	// The proxy still serves: a watch sees a write.
	c := testutil.Client(t, p.Addr())
	wch := c.Watch(ctx, "after")
	if _, err := c.Put(ctx, "after", "v"); err != nil {
		t.Fatal(err)
	}
	if r := <-wch; len(r.Events) != 1 {
		t.Fatalf("a watch after the matrix: %+v", r)
	}
}

// progressWithoutWatches asks for progress on a stream with no watch,
// then creates one, writes its key and asks again once the event is in,
// and describes every response up to the answer to the second request
// (the first answer at or past the write): etcd answers only that one.
func progressWithoutWatches(ctx context.Context, conn *grpc.ClientConn) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		return "open: " + err.Error()
	}
	progress := &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}
	for _, r := range []*pb.WatchRequest{progress, watchCreate(&pb.WatchCreateRequest{Key: []byte("sentinel"), WatchId: 999})} {
		if err := st.Send(r); err != nil {
			return "send: " + err.Error()
		}
	}
	var out []string
	var wrote int64
	for {
		r, err := st.Recv()
		if err != nil {
			return strings.Join(append(out, "error "+status.Code(err).String()), "; ")
		}
		switch {
		case r.WatchId == 999 && r.Created:
			out = append(out, "created")
			put, err := pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("sentinel"), Value: []byte("v")})
			if err != nil {
				return "put: " + err.Error()
			}
			wrote = put.Header.Revision
		case r.WatchId == 999 && len(r.Events) > 0:
			out = append(out, "event")
			if err := st.Send(progress); err != nil {
				return "send: " + err.Error()
			}
		case r.WatchId == -1 && wrote > 0 && r.Header.GetRevision() >= wrote:
			return strings.Join(append(out, "progress"), "; ")
		case r.WatchId == -1:
			out = append(out, "progress from before the write")
		default:
			out = append(out, fmt.Sprintf("id=%d created=%v canceled=%v", r.WatchId, r.Created, r.Canceled))
		}
	}
}
