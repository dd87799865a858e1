package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
	"github.com/etcdproxy/etcdproxy/core/lease"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// leaseServer forwards the Lease service. etcd does not scope leases by key,
// so under a namespace a lease counts as the namespace's when every key
// attached to it lies inside the prefix (a lease with no keys yet qualifies,
// so that a fresh concurrency.Session works); other leases are invisible:
// they are not listed, cannot be revoked or kept alive, and look expired to
// TimeToLive.
//
// Keep-alive streams without an auth token go through the core's lease
// machine (core/lease): they share one upstream keep-alive stream, and a
// lease is refreshed on etcd about once per third of its TTL however often
// clients ask. Under a namespace the machine also remembers which leases
// are the namespace's: each is checked once (check), not once per stream,
// and LeaseLeases checks only the leases it has no verdict for. Streams
// with a token are relayed one to one.
type leaseServer struct {
	pb.UnimplementedLeaseServer
	up   pb.LeaseClient
	ns   keyspace.Prefix
	loop *loop
}

func (s *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	return forward(ctx, s.up.LeaseGrant, r)
}

// ownership asks etcd for the lease's keys and reports whether the lease
// belongs to the namespace, with its TimeToLive answer (keys inside the
// namespace only).
func (s *leaseServer) ownership(ctx context.Context, id int64) (*pb.LeaseTimeToLiveResponse, bool, error) {
	resp, err := forward(ctx, s.up.LeaseTimeToLive, &pb.LeaseTimeToLiveRequest{ID: id, Keys: true})
	if err != nil {
		return nil, false, err
	}
	var all bool
	if resp.TTL != -1 { // -1: not found
		resp.Keys, all = s.ns.LeaseKeys(resp.Keys)
	}
	return resp, all, nil
}

// owned is ownership for a client's call: the verdict is handed to the
// lease machine too.
func (s *leaseServer) owned(ctx context.Context, id int64) (*pb.LeaseTimeToLiveResponse, bool, error) {
	resp, mine, err := s.ownership(ctx, id)
	if err == nil && s.loop != nil {
		s.loop.input(node.LeaseChecked{ID: id, Result: checkResult(resp, mine)})
	}
	return resp, mine, err
}

// check is the lease machine's ownership check (port.LeaseCheck).
func (s *leaseServer) check(ctx context.Context, id int64) port.LeaseCheckResult {
	resp, mine, err := s.ownership(ctx, id)
	if err != nil {
		return port.LeaseCheckResult{Err: err}
	}
	return checkResult(resp, mine)
}

func checkResult(resp *pb.LeaseTimeToLiveResponse, mine bool) port.LeaseCheckResult {
	if resp.TTL == -1 {
		return port.LeaseCheckResult{Header: resp.Header}
	}
	return port.LeaseCheckResult{Header: resp.Header, Found: true, Mine: mine, TTL: resp.GrantedTTL}
}

// LeaseRevoke checks the lease afresh under a namespace (a revoke deletes
// every key attached, so it is not decided on a remembered verdict).
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
	// The revoke deleted the lease's keys at its revision: the connection
	// reads from there on, as after a write (see kvServer.Range).
	floorOf(ctx).raise(resp.GetHeader().GetRevision())
	if err == nil && s.loop != nil {
		// The lease machine stops answering for it at once.
		s.loop.input(node.LeaseRevoked{ID: r.ID})
	}
	return resp, err
}

// LeaseTimeToLive asks etcd with the keys under a namespace, which is also
// the ownership check: no extra call.
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

// maxListChecks bounds the ownership checks one LeaseLeases runs at once.
const maxListChecks = 16

// LeaseLeases lists etcd's leases; under a namespace only the namespace's:
// those the lease machine has a verdict for are judged on it, the others
// are checked (at most maxListChecks at once) and their verdicts
// remembered, so that a lease is checked once, not on every call.
func (s *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	resp, err := forward(ctx, s.up.LeaseLeases, r)
	if err != nil || s.ns.Empty() {
		return resp, err
	}
	ids := make([]int64, len(resp.Leases))
	for i, l := range resp.Leases {
		ids[i] = l.ID
	}
	verdicts := make([]lease.Verdict, len(ids))
	if s.loop != nil {
		s.loop.input(node.LeasesListed{IDs: ids})
		s.loop.do(func(n *node.Node) { verdicts = n.LeaseVerdicts(ids) })
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxListChecks)
	for i, v := range verdicts {
		if v != lease.Unknown {
			continue
		}
		g.Go(func() error {
			_, mine, err := s.owned(gctx, ids[i])
			if err != nil {
				return err
			}
			verdicts[i] = lease.Foreign
			if mine {
				verdicts[i] = lease.Mine
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	kept := resp.Leases[:0]
	for i, l := range resp.Leases {
		if verdicts[i] == lease.Mine {
			kept = append(kept, l)
		}
	}
	resp.Leases = kept
	return resp, nil
}

// LeaseKeepAlive serves keep-alives through the lease machine, or relays a
// stream that carries an auth token (then, under a namespace, the first
// keep-alive for each lease on the stream checks that the lease belongs to
// the namespace; another namespace's lease gets etcd's answer for an
// unknown lease, TTL 0, and is not refreshed).
func (s *leaseServer) LeaseKeepAlive(stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	if s.loop != nil && !hasToken(stream.Context()) {
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
