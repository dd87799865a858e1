package shell

import (
	"context"
	"os"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// clusterServer forwards the Cluster service. MemberList answers as etcd's
// proxy does: with the registered proxies when --resolver-prefix is set,
// with this proxy alone when only --advertise-client-url is set, and with
// etcd's own member list when the advertise URL is empty. Membership changes
// act on the whole cluster, so a namespace may not issue them.
type clusterServer struct {
	pb.UnimplementedClusterServer
	up        pb.ClusterClient
	nsActive  bool
	advertise string
	members   func() []*pb.Member // registered proxies; nil without --resolver-prefix
}

func (s *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if s.advertise == "" {
		return forward(ctx, s.up.MemberList, r)
	}
	if s.members != nil {
		if ms := s.members(); len(ms) > 0 {
			return &pb.MemberListResponse{Members: ms}, nil
		}
	}
	host, _ := os.Hostname()
	return &pb.MemberListResponse{Members: []*pb.Member{{Name: host, ClientURLs: []string{s.advertise}}}}, nil
}

func (s *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if s.nsActive {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.MemberAdd, r)
}

func (s *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if s.nsActive {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.MemberRemove, r)
}

func (s *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if s.nsActive {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.MemberUpdate, r)
}

func (s *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if s.nsActive {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.MemberPromote, r)
}
