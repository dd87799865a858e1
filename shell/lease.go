package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
	"github.com/etcdproxy/etcdproxy/core/node"
)

// leaseServer forwards the Lease service. etcd does not scope leases by key,
// so under a namespace a lease counts as the namespace's when every key
// attached to it lies inside the prefix (a lease with no keys yet qualifies,
// so that a fresh concurrency.Session works); other leases are invisible:
// they are not listed, cannot be revoked, and look expired to TimeToLive.
//
// Keep-alive streams without an auth token and outside a namespace go
// through the core's lease machine (core/lease): they share one upstream
// keep-alive stream, and a lease is refreshed on etcd about once per third
// of its TTL however often clients ask. The others are relayed one to one.
type leaseServer struct {
	pb.UnimplementedLeaseServer
	up   pb.LeaseClient
	ns   keyspace.Prefix
	loop *loop
}

func (s *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return forward(ctx, s.up.LeaseGrant, r)
}

// owned asks etcd for the lease's keys and reports whether the lease belongs
// to the namespace, with its TimeToLive answer.
func (s *leaseServer) owned(ctx context.Context, id int64) (*pb.LeaseTimeToLiveResponse, bool, error) {
	resp, err := forward(ctx, s.up.LeaseTimeToLive, &pb.LeaseTimeToLiveRequest{ID: id, Keys: true})
	if err != nil {
		return nil, false, err
	}
	if resp.TTL == -1 {
		return resp, false, nil // not found
	}
	var all bool
	resp.Keys, all = s.ns.LeaseKeys(resp.Keys)
	return resp, all, nil
}

func (s *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if !s.ns.Empty() {
		_, mine, err := s.owned(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		if !mine {
			return nil, rpctypes.ErrGRPCLeaseNotFound
		}
	}
	resp, err := forward(ctx, s.up.LeaseRevoke, r)
	if err == nil && s.loop != nil {
		// The lease machine stops answering for it at once.
		s.loop.input(node.LeaseRevoked{ID: r.ID})
	}
	return resp, err
}

func (s *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if s.ns.Empty() {
		return forward(ctx, s.up.LeaseTimeToLive, r)
	}
	resp, mine, err := s.owned(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	if !mine {
		// etcd's answer for a lease it does not know.
		return &pb.LeaseTimeToLiveResponse{Header: resp.Header, ID: r.ID, TTL: -1}, nil
	}
	if !r.Keys {
		resp.Keys = nil
	}
	return resp, nil
}

func (s *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	resp, err := forward(ctx, s.up.LeaseLeases, r)
	if err != nil || s.ns.Empty() {
		return resp, err
	}
	kept := resp.Leases[:0]
	for _, l := range resp.Leases {
		_, mine, err := s.owned(ctx, l.ID)
		if err != nil {
			return nil, err
		}
		if mine {
			kept = append(kept, l)
		}
	}
	resp.Leases = kept
	return resp, nil
}

// LeaseKeepAlive relays keep-alives. Under a namespace, the first
// keep-alive for each lease on a stream checks that the lease belongs to the
// namespace; another namespace's lease gets etcd's answer for an unknown
// lease (TTL 0) and is not refreshed.
func (s *leaseServer) LeaseKeepAlive(stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	if s.loop != nil && s.ns.Empty() && !hasToken(stream.Context()) {
		return s.loop.serveLeaseKeepAlive(stream)
	}
	checked := map[int64]bool{} // lease ID -> belongs to the namespace
	return relay(stream,
		func(ctx context.Context) (grpc.BidiStreamingClient[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse], error) {
			return s.up.LeaseKeepAlive(ctx)
		},
		func(ctx context.Context, r *pb.LeaseKeepAliveRequest) *pb.LeaseKeepAliveResponse {
			if s.ns.Empty() {
				return nil
			}
			mine, ok := checked[r.ID]
			if !ok {
				resp, owned, err := s.owned(ctx, r.ID)
				if err != nil {
					return nil // let etcd answer; nothing is learned
				}
				mine = owned
				if resp.TTL != -1 {
					checked[r.ID] = mine
				}
				if !mine {
					return &pb.LeaseKeepAliveResponse{Header: resp.Header, ID: r.ID, TTL: 0}
				}
			}
			if !mine {
				return &pb.LeaseKeepAliveResponse{ID: r.ID, TTL: 0}
			}
			return nil
		},
		func(*pb.LeaseKeepAliveResponse) {},
	)
}
