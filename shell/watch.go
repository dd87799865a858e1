package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// watchServer serves client watch streams. Streams without an auth token go
// through the core's watch machine, which merges watchers on the same range into
// one upstream watcher. A stream with a token is relayed to an upstream
// stream of its own carrying that token, so that etcd checks every event
// against the client's own permissions and nothing is shared across auth
// identities.
type watchServer struct {
	pb.UnimplementedWatchServer
	up   pb.WatchClient
	ns   keyspace.Prefix
	loop *loop
}

func (s *watchServer) Watch(stream grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]) error {
	if s.loop != nil && !hasToken(stream.Context()) {
		return s.loop.serveWatch(stream, s.ns.WatchCreateRequest)
	}
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
