package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// maintenanceServer forwards the Maintenance service to the member the proxy
// is using. Calls that change or copy the whole cluster (Snapshot,
// Defragment, MoveLeader, Downgrade, alarm changes) are refused under a
// namespace; reads (Status, Hash, HashKV, alarm list) are not.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	up       pb.MaintenanceClient
	nsActive bool
}

func (s *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	if s.nsActive && r.Action != pb.AlarmRequest_GET {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.Alarm, r)
}

func (s *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	return forward(ctx, s.up.Status, r)
}

func (s *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if s.nsActive {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.Defragment, r)
}

func (s *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	return forward(ctx, s.up.Hash, r)
}

func (s *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	return forward(ctx, s.up.HashKV, r)
}

func (s *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if s.nsActive {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.MoveLeader, r)
}

func (s *maintenanceServer) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	if s.nsActive {
		return nil, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, s.up.Downgrade, r)
}

// Snapshot streams the member's backend to the client as etcd sends it.
func (s *maintenanceServer) Snapshot(r *pb.SnapshotRequest, srv grpc.ServerStreamingServer[pb.SnapshotResponse]) error {
	if s.nsActive {
		return rpctypes.ErrGRPCPermissionDenied
	}
	return relayDown(srv, func(ctx context.Context) (grpc.ServerStreamingClient[pb.SnapshotResponse], error) {
		return s.up.Snapshot(ctx, r)
	}, func(*pb.SnapshotResponse) {})
}
