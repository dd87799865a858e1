package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// kvServer forwards the KV service to etcd, translating keys under the
// namespace.
type kvServer struct {
	pb.UnimplementedKVServer
	up pb.KVClient
	ns keyspace.Prefix
}

func (s *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	s.ns.RangeRequest(r)
	resp, err := forward(ctx, s.up.Range, r)
	s.ns.RangeResponse(resp)
	return resp, err
}

func (s *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	s.ns.PutRequest(r)
	resp, err := forward(ctx, s.up.Put, r)
	s.ns.PutResponse(resp)
	return resp, err
}

func (s *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	s.ns.DeleteRangeRequest(r)
	resp, err := forward(ctx, s.up.DeleteRange, r)
	s.ns.DeleteRangeResponse(resp)
	return resp, err
}

func (s *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	s.ns.TxnRequest(r)
	resp, err := forward(ctx, s.up.Txn, r)
	s.ns.TxnResponse(resp)
	return resp, err
}

// Compact acts on the whole keyspace, so a namespace may not issue it.
func (s *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if !s.ns.Empty() {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.Compact, r)
}

// RangeStream relays etcd's chunked range responses.
func (s *kvServer) RangeStream(r *pb.RangeRequest, srv grpc.ServerStreamingServer[pb.RangeStreamResponse]) error {
	s.ns.RangeRequest(r)
	return relayDown(srv, func(ctx context.Context) (grpc.ServerStreamingClient[pb.RangeStreamResponse], error) {
		return s.up.RangeStream(ctx, r)
	}, s.ns.RangeStreamResponse)
}
