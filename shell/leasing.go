package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/leasing"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// --experimental-leasing-prefix serves the KV service through clientv3's
// leasing KV, as etcd's grpc-proxy does: the proxy takes a lease on each
// key it reads (metadata under the prefix, inside the namespace as in
// etcd: the leasing KV sees the keyspace through the namespace, so the KV
// service hands it keys as clients send them), answers later linearizable reads of it locally, and gives the
// lease up when another leasing client writes the key. Writers that do not
// use the leasing protocol (a plain client writing directly to etcd) are
// not seen: every writer of the keys must go through a leasing client, as
// etcd documents for the leasing KV.

// leasingKV is the pb.KVClient the KV service forwards to when leasing is
// on: requests become clientv3 operations (etcd's own grpcproxy
// conversions) on the leasing KV. RangeStream is refused, as the leasing
// KV refuses GetStream.
type leasingKV struct {
	kv clientv3.KV
}

// newLeasingKV starts the leasing KV on c, seen through namespace ns as
// etcd's proxy sees it (so its requests take keys without the namespace),
// with its metadata under prefix. It returns when the leasing session is
// up, and its close function.
func newLeasingKV(c *clientv3.Client, ns, prefix string) (*leasingKV, func(), error) {
	cl := c
	if ns != "" {
		cl = clientv3.NewCtxClient(c.Ctx())
		cl.KV = namespace.NewKV(c.KV, ns)
		cl.Watcher = namespace.NewWatcher(c.Watcher, ns)
		cl.Lease = namespace.NewLease(c.Lease, ns)
	}
	kv, closeFn, err := leasing.NewKV(cl, prefix)
	if err != nil {
		return nil, nil, err
	}
	return &leasingKV{kv: kv}, closeFn, nil
}

func (l *leasingKV) Range(ctx context.Context, r *pb.RangeRequest, _ ...grpc.CallOption) (*pb.RangeResponse, error) {
	resp, err := l.kv.Do(ctx, grpcproxy.RangeRequestToOp(r))
	if err != nil {
		return nil, err
	}
	return (*pb.RangeResponse)(resp.Get()), nil
}

func (l *leasingKV) Put(ctx context.Context, r *pb.PutRequest, _ ...grpc.CallOption) (*pb.PutResponse, error) {
	resp, err := l.kv.Do(ctx, grpcproxy.PutRequestToOp(r))
	if err != nil {
		return nil, err
	}
	return (*pb.PutResponse)(resp.Put()), nil
}

func (l *leasingKV) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest, _ ...grpc.CallOption) (*pb.DeleteRangeResponse, error) {
	resp, err := l.kv.Do(ctx, grpcproxy.DelRequestToOp(r))
	if err != nil {
		return nil, err
	}
	return (*pb.DeleteRangeResponse)(resp.Del()), nil
}

func (l *leasingKV) Txn(ctx context.Context, r *pb.TxnRequest, _ ...grpc.CallOption) (*pb.TxnResponse, error) {
	resp, err := l.kv.Do(ctx, grpcproxy.TxnRequestToOp(r))
	if err != nil {
		return nil, err
	}
	return (*pb.TxnResponse)(resp.Txn()), nil
}

func (l *leasingKV) Compact(ctx context.Context, r *pb.CompactionRequest, _ ...grpc.CallOption) (*pb.CompactionResponse, error) {
	var opts []clientv3.CompactOption
	if r.Physical {
		opts = append(opts, clientv3.WithCompactPhysical())
	}
	resp, err := l.kv.Compact(ctx, r.Revision, opts...)
	if err != nil {
		return nil, err
	}
	return (*pb.CompactionResponse)(resp), nil
}

func (l *leasingKV) RangeStream(context.Context, *pb.RangeRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[pb.RangeStreamResponse], error) {
	return nil, status.Error(codes.Unimplemented, "RangeStream is not served with --experimental-leasing-prefix (the leasing KV does not stream)")
}
