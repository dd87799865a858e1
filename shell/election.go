package shell

import (
	"context"

	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// electionServer forwards etcd's v3election service. Election names are key
// prefixes, so under a namespace they are prefixed like keys and leader keys
// are translated both ways.
type electionServer struct {
	v3electionpb.UnimplementedElectionServer
	up v3electionpb.ElectionClient
	ns keyspace.Prefix
}

func (s *electionServer) leaderKeyIn(l *v3electionpb.LeaderKey) {
	if l != nil && !s.ns.Empty() {
		l.Name, l.Key = s.ns.Join(l.Name), s.ns.Join(l.Key)
	}
}

func (s *electionServer) leaderKeyOut(l *v3electionpb.LeaderKey) {
	if l != nil {
		l.Name, l.Key = s.ns.Strip(l.Name), s.ns.Strip(l.Key)
	}
}

func (s *electionServer) Campaign(ctx context.Context, r *v3electionpb.CampaignRequest) (*v3electionpb.CampaignResponse, error) {
	r.Name = s.ns.Join(r.Name)
	resp, err := forward(ctx, s.up.Campaign, r)
	if resp != nil {
		s.leaderKeyOut(resp.Leader)
	}
	return resp, err
}

func (s *electionServer) Proclaim(ctx context.Context, r *v3electionpb.ProclaimRequest) (*v3electionpb.ProclaimResponse, error) {
	s.leaderKeyIn(r.Leader)
	return forward(ctx, s.up.Proclaim, r)
}

func (s *electionServer) Leader(ctx context.Context, r *v3electionpb.LeaderRequest) (*v3electionpb.LeaderResponse, error) {
	r.Name = s.ns.Join(r.Name)
	resp, err := forward(ctx, s.up.Leader, r)
	if resp != nil {
		s.ns.KeyValue(resp.Kv)
	}
	return resp, err
}

func (s *electionServer) Observe(r *v3electionpb.LeaderRequest, srv grpc.ServerStreamingServer[v3electionpb.LeaderResponse]) error {
	r.Name = s.ns.Join(r.Name)
	return relayDown(srv, func(ctx context.Context) (grpc.ServerStreamingClient[v3electionpb.LeaderResponse], error) {
		return s.up.Observe(ctx, r)
	}, func(resp *v3electionpb.LeaderResponse) { s.ns.KeyValue(resp.Kv) })
}

func (s *electionServer) Resign(ctx context.Context, r *v3electionpb.ResignRequest) (*v3electionpb.ResignResponse, error) {
	s.leaderKeyIn(r.Leader)
	return forward(ctx, s.up.Resign, r)
}

// lockServer forwards etcd's v3lock service; lock names and keys are
// translated like election names.
type lockServer struct {
	v3lockpb.UnimplementedLockServer
	up v3lockpb.LockClient
	ns keyspace.Prefix
}

func (s *lockServer) Lock(ctx context.Context, r *v3lockpb.LockRequest) (*v3lockpb.LockResponse, error) {
	r.Name = s.ns.Join(r.Name)
	resp, err := forward(ctx, s.up.Lock, r)
	if resp != nil {
		resp.Key = s.ns.Strip(resp.Key)
	}
	return resp, err
}

func (s *lockServer) Unlock(ctx context.Context, r *v3lockpb.UnlockRequest) (*v3lockpb.UnlockResponse, error) {
	r.Key = s.ns.Join(r.Key)
	return forward(ctx, s.up.Unlock, r)
}
