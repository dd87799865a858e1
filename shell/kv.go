package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// kvServer forwards the KV service to etcd, translating keys under the
// namespace, and answers reads from the read cache when it can (cache nil:
// no cache).
type kvServer struct {
	pb.UnimplementedKVServer
	up    pb.KVClient
	ns    keyspace.Prefix
	cache *readCache
}

// Range answers a read. A read of the current revision by a client without
// a token asks the read cache first (see core/cache: a serializable read
// is answered from a live entry, a linearizable one once etcd's current
// revision is confirmed and delivered); otherwise, or when the cache has
// no answer, it goes to etcd and its response fills the cache. No answer
// goes below the connection's floor: a serializable response from a member
// behind what the connection has seen is asked again as a linearizable
// read.
func (s *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	fl := floorOf(ctx)
	var (
		k          cache.Key
		cached     bool
		start, end []byte
	)
	if s.cache != nil && cacheable(ctx) {
		if k, cached = cache.KeyOf("", r); cached {
			if resp := s.cache.read(ctx, k, !r.Serializable, fl.get()); resp != nil {
				fl.raise(resp.GetHeader().GetRevision())
				return resp, nil
			}
			start, end = r.Key, r.RangeEnd
		}
	}
	s.ns.RangeRequest(r)
	resp, err := forward(ctx, s.up.Range, r)
	if err == nil && r.Serializable && resp.GetHeader().GetRevision() < fl.get() {
		r.Serializable = false
		resp, err = forward(ctx, s.up.Range, r)
	}
	if err != nil {
		return nil, err
	}
	s.ns.RangeResponse(resp)
	fl.raise(resp.GetHeader().GetRevision())
	if cached {
		s.cache.fill(k, start, end, resp)
	}
	return resp, nil
}

func (s *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	s.ns.PutRequest(r)
	resp, err := forward(ctx, s.up.Put, r)
	s.ns.PutResponse(resp)
	floorOf(ctx).raise(resp.GetHeader().GetRevision())
	return resp, err
}

func (s *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	s.ns.DeleteRangeRequest(r)
	resp, err := forward(ctx, s.up.DeleteRange, r)
	s.ns.DeleteRangeResponse(resp)
	floorOf(ctx).raise(resp.GetHeader().GetRevision())
	return resp, err
}

func (s *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	s.ns.TxnRequest(r)
	resp, err := forward(ctx, s.up.Txn, r)
	s.ns.TxnResponse(resp)
	floorOf(ctx).raise(resp.GetHeader().GetRevision())
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
