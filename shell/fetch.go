package shell

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// fetch runs a revision fetch for the node (see port.Fetch): a linearizable
// Range, limit 1, keys only, with the client's token. What etcd answers,
// error or not, goes back as it is: the core decides what it means. It is
// made once, on the plain KV client: the node retries a fetch that failed
// for a transport reason (port.Config.RetryInterval), so a retrying client
// under it would retry the same fetch twice over.
func (l *loop) fetch(f port.Fetch) {
	ctx, cancel := l.clock.WithTimeout(l.ctx, fetchTimeout)
	defer cancel()
	if f.Token != "" {
		ctx = metadataWithToken(ctx, f.Token)
	}
	resp, err := l.kv.Range(ctx, &pb.RangeRequest{Key: f.Key, RangeEnd: f.End, Limit: 1, KeysOnly: true, Revision: f.Revision})
	if l.ctx.Err() != nil {
		return
	}
	var res port.FetchResult
	switch {
	case err == nil:
		res.Header = resp.Header
	case ctx.Err() != nil:
		res.Err = status.FromContextError(ctx.Err()).Err()
	default:
		res.Err = err
	}
	l.input(node.Fetched{ID: f.ID, Result: res})
}
