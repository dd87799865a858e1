package shell_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// parityStep is one request sent both to etcd directly and through the proxy.
type parityStep struct {
	name string
	do   func(ctx context.Context, cc *grpc.ClientConn) (proto.Message, error)
}

func kvStep[Req, Resp proto.Message](name string, call func(pb.KVClient) func(context.Context, Req, ...grpc.CallOption) (Resp, error), req func() Req) parityStep {
	return parityStep{name, func(ctx context.Context, cc *grpc.ClientConn) (proto.Message, error) {
		return call(pb.NewKVClient(cc))(ctx, req())
	}}
}

func leaseStep[Req, Resp proto.Message](name string, call func(pb.LeaseClient) func(context.Context, Req, ...grpc.CallOption) (Resp, error), req func() Req) parityStep {
	return parityStep{name, func(ctx context.Context, cc *grpc.ClientConn) (proto.Message, error) {
		return call(pb.NewLeaseClient(cc))(ctx, req())
	}}
}

func rng(key, end string) func() *pb.RangeRequest {
	return func() *pb.RangeRequest { return &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)} }
}

func put(key, val string) func() *pb.PutRequest {
	return func() *pb.PutRequest { return &pb.PutRequest{Key: []byte(key), Value: []byte(val), PrevKv: true} }
}

func kvRange(c pb.KVClient) func(context.Context, *pb.RangeRequest, ...grpc.CallOption) (*pb.RangeResponse, error) {
	return c.Range
}
func kvPut(c pb.KVClient) func(context.Context, *pb.PutRequest, ...grpc.CallOption) (*pb.PutResponse, error) {
	return c.Put
}
func kvDelete(c pb.KVClient) func(context.Context, *pb.DeleteRangeRequest, ...grpc.CallOption) (*pb.DeleteRangeResponse, error) {
	return c.DeleteRange
}
func kvTxn(c pb.KVClient) func(context.Context, *pb.TxnRequest, ...grpc.CallOption) (*pb.TxnResponse, error) {
	return c.Txn
}
func kvCompact(c pb.KVClient) func(context.Context, *pb.CompactionRequest, ...grpc.CallOption) (*pb.CompactionResponse, error) {
	return c.Compact
}

func opPut(key, val string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte(val)}}}
}

func paritySteps() []parityStep {
	big := func(n int) func() *pb.PutRequest {
		return func() *pb.PutRequest { return &pb.PutRequest{Key: []byte("big"), Value: bytes.Repeat([]byte("x"), n)} }
	}
	manyOps := func() *pb.TxnRequest {
		t := &pb.TxnRequest{}
		for i := 0; i < 129; i++ {
			t.Success = append(t.Success, opPut(fmt.Sprintf("many/%d", i), "v"))
		}
		return t
	}
	return []parityStep{
		kvStep("put a", kvPut, put("a", "1")),
		kvStep("put b", kvPut, put("b", "2")),
		kvStep("put a again with prev_kv", kvPut, put("a", "1b")),
		kvStep("get a", kvRange, rng("a", "")),
		kvStep("get from a", kvRange, rng("a", "\x00")),
		kvStep("get [a, b)", kvRange, rng("a", "b")),
		kvStep("get reversed range", kvRange, rng("b", "a")),
		kvStep("get all, sorted descending by value", kvRange, func() *pb.RangeRequest {
			return &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VALUE}
		}),
		kvStep("count only, limit 1", kvRange, func() *pb.RangeRequest {
			return &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true, Limit: 1}
		}),
		kvStep("empty key", kvRange, rng("", "")),
		kvStep("future revision", kvRange, func() *pb.RangeRequest { return &pb.RangeRequest{Key: []byte("a"), Revision: 1000} }),
		kvStep("invalid sort order", kvRange, func() *pb.RangeRequest {
			return &pb.RangeRequest{Key: []byte("a"), SortOrder: pb.RangeRequest_SortOrder(42)}
		}),
		kvStep("put empty key", kvPut, put("", "x")),
		kvStep("ignore_value with a value", kvPut, func() *pb.PutRequest {
			return &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true}
		}),
		kvStep("put with unknown lease", kvPut, func() *pb.PutRequest {
			return &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), Lease: 999}
		}),
		kvStep("txn with nested txn", kvTxn, func() *pb.TxnRequest {
			return &pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte("1b")}}},
				Success: []*pb.RequestOp{
					opPut("c", "3"),
					{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a")}}},
					{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
						Success: []*pb.RequestOp{opPut("d", "4"),
							{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("b"), PrevKv: true}}}},
					}}},
				},
				Failure: []*pb.RequestOp{opPut("failed", "1")},
			}
		}),
		kvStep("txn compare failing on a range", kvTxn, func() *pb.TxnRequest {
			return &pb.TxnRequest{
				Compare: []*pb.Compare{{Key: []byte("a"), RangeEnd: []byte("z"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 5}}},
				Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z")}}}},
			}
		}),
		kvStep("txn too many ops", kvTxn, manyOps),
		kvStep("txn duplicate key", kvTxn, func() *pb.TxnRequest {
			return &pb.TxnRequest{Success: []*pb.RequestOp{opPut("dup", "1"), opPut("dup", "2")}}
		}),
		kvStep("txn compare with empty key", kvTxn, func() *pb.TxnRequest {
			return &pb.TxnRequest{Compare: []*pb.Compare{{Key: nil, Target: pb.Compare_VERSION, TargetUnion: &pb.Compare_Version{}}}}
		}),
		kvStep("request too large for etcd", kvPut, big(1600*1024)),
		kvStep("request too large for gRPC", kvPut, big(3*1024*1024)),
		kvStep("delete empty key", kvDelete, func() *pb.DeleteRangeRequest { return &pb.DeleteRangeRequest{} }),
		kvStep("delete c with prev_kv", kvDelete, func() *pb.DeleteRangeRequest {
			return &pb.DeleteRangeRequest{Key: []byte("c"), PrevKv: true}
		}),
		kvStep("compact at 4", kvCompact, func() *pb.CompactionRequest { return &pb.CompactionRequest{Revision: 4, Physical: true} }),
		kvStep("get at compacted revision", kvRange, func() *pb.RangeRequest { return &pb.RangeRequest{Key: []byte("a"), Revision: 2} }),
		kvStep("compact again at 3", kvCompact, func() *pb.CompactionRequest { return &pb.CompactionRequest{Revision: 3} }),
		kvStep("compact in the future", kvCompact, func() *pb.CompactionRequest { return &pb.CompactionRequest{Revision: 1000} }),
		leaseStep("grant lease 777", func(c pb.LeaseClient) func(context.Context, *pb.LeaseGrantRequest, ...grpc.CallOption) (*pb.LeaseGrantResponse, error) {
			return c.LeaseGrant
		}, func() *pb.LeaseGrantRequest { return &pb.LeaseGrantRequest{ID: 777, TTL: 60} }),
		leaseStep("grant lease 777 again", func(c pb.LeaseClient) func(context.Context, *pb.LeaseGrantRequest, ...grpc.CallOption) (*pb.LeaseGrantResponse, error) {
			return c.LeaseGrant
		}, func() *pb.LeaseGrantRequest { return &pb.LeaseGrantRequest{ID: 777, TTL: 60} }),
		kvStep("put with lease 777", kvPut, func() *pb.PutRequest {
			return &pb.PutRequest{Key: []byte("leased"), Value: []byte("v"), Lease: 777}
		}),
		leaseStep("time to live of unknown lease", func(c pb.LeaseClient) func(context.Context, *pb.LeaseTimeToLiveRequest, ...grpc.CallOption) (*pb.LeaseTimeToLiveResponse, error) {
			return c.LeaseTimeToLive
		}, func() *pb.LeaseTimeToLiveRequest { return &pb.LeaseTimeToLiveRequest{ID: 12345, Keys: true} }),
		leaseStep("revoke unknown lease", func(c pb.LeaseClient) func(context.Context, *pb.LeaseRevokeRequest, ...grpc.CallOption) (*pb.LeaseRevokeResponse, error) {
			return c.LeaseRevoke
		}, func() *pb.LeaseRevokeRequest { return &pb.LeaseRevokeRequest{ID: 12345} }),
		leaseStep("revoke lease 777", func(c pb.LeaseClient) func(context.Context, *pb.LeaseRevokeRequest, ...grpc.CallOption) (*pb.LeaseRevokeResponse, error) {
			return c.LeaseRevoke
		}, func() *pb.LeaseRevokeRequest { return &pb.LeaseRevokeRequest{ID: 777} }),
		{"range stream of everything", func(ctx context.Context, cc *grpc.ClientConn) (proto.Message, error) {
			st, err := pb.NewKVClient(cc).RangeStream(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
			if err != nil {
				return nil, err
			}
			merged := &pb.RangeResponse{}
			for {
				r, err := st.Recv()
				if err == io.EOF {
					return merged, nil
				}
				if err != nil {
					return nil, err
				}
				proto.Merge(merged, r.RangeResponse)
			}
		}},
		kvStep("get everything at the end", kvRange, rng("\x00", "\x00")),
	}
}

// normalize clears the header fields that differ between two clusters.
func normalize(m proto.Message) {
	if m == nil {
		return
	}
	if h, ok := m.(interface{ GetHeader() *pb.ResponseHeader }); ok && h.GetHeader() != nil {
		h.GetHeader().ClusterId, h.GetHeader().MemberId = 0, 0
	}
	if t, ok := m.(*pb.TxnResponse); ok {
		for _, r := range t.Responses {
			switch v := r.Response.(type) {
			case *pb.ResponseOp_ResponseRange:
				normalize(v.ResponseRange)
			case *pb.ResponseOp_ResponsePut:
				normalize(v.ResponsePut)
			case *pb.ResponseOp_ResponseDeleteRange:
				normalize(v.ResponseDeleteRange)
			case *pb.ResponseOp_ResponseTxn:
				normalize(v.ResponseTxn)
			}
		}
	}
}

// TestParityWithDirectEtcd sends the same requests to one etcd directly and
// to a second, identical etcd through the proxy, and requires equal answers:
// equal responses (revisions included) and equal gRPC codes and messages.
func TestParityWithDirectEtcd(t *testing.T) {
	testParity(t, "", paritySteps())
}

// TestParityUnderNamespace is the same comparison with the proxy under
// --namespace: a client of the namespace sees what a client of a whole etcd
// of its own would see. Compaction is left out: a namespace may not compact.
func TestParityUnderNamespace(t *testing.T) {
	var steps []parityStep
	for _, s := range paritySteps() {
		if !strings.Contains(s.name, "compact") {
			steps = append(steps, s)
		}
	}
	testParity(t, "tenant/", steps)
}

func testParity(t *testing.T, namespace string, steps []parityStep) {
	direct := testutil.StartMember(t)
	behind := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{behind.ClientURL}, func(c *shell.Config) { c.Namespace = namespace })
	dc, pc := testutil.Dial(t, direct.ClientURL), testutil.Dial(t, p.Addr())

	for _, s := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		want, wantErr := s.do(ctx, dc)
		got, gotErr := s.do(ctx, pc)
		cancel()
		ws, gs := status.Convert(wantErr), status.Convert(gotErr)
		if ws.Code() != gs.Code() || ws.Message() != gs.Message() {
			t.Errorf("%s: error through proxy = %v %q, directly = %v %q", s.name, gs.Code(), gs.Message(), ws.Code(), ws.Message())
			continue
		}
		if wantErr != nil {
			t.Logf("%s: both answered %v %q", s.name, ws.Code(), ws.Message())
			continue
		}
		normalize(want)
		normalize(got)
		if !proto.Equal(want, got) {
			t.Errorf("%s: response through proxy differs\n proxy:  %v\n direct: %v", s.name, got, want)
		}
	}
}
