package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// watchServer relays each client watch stream to its own upstream watch
// stream, translating keys under the namespace.
type watchServer struct {
	pb.UnimplementedWatchServer
	up pb.WatchClient
	ns keyspace.Prefix
}

func (s *watchServer) Watch(stream grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]) error {
	return relay(stream,
		func(ctx context.Context) (grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse], error) {
			return s.up.Watch(ctx)
		},
		func(_ context.Context, r *pb.WatchRequest) *pb.WatchResponse {
			s.ns.WatchCreateRequest(r.GetCreateRequest())
			return nil
		},
		s.ns.WatchResponse,
	)
}
