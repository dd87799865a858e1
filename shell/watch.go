package shell

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// watchServer serves client watch streams through the core's watch
// machine, which merges watchers on the same range into one upstream
// watcher. Streams with an auth token are merged only with streams
// carrying the same token, on upstream streams opened with it (a lane), so
// that etcd checks that token's permissions on every watch it creates, as
// for a direct client, and nothing is shared across auth identities.
type watchServer struct {
	pb.UnimplementedWatchServer
	ns   keyspace.Prefix
	loop *loop
}

func (s *watchServer) Watch(stream grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse]) error {
	return s.loop.serveWatch(stream, s.ns.WatchCreateRequest)
}
