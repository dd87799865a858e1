package shell

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy"
	"go.uber.org/zap"
)

// registration keeps this proxy registered under --resolver-prefix with a
// lease of --resolver-ttl seconds, with etcd's own grpcproxy.Register (the
// key prefix/addr and the {"name": host} metadata etcd's proxy writes, so
// both kinds of proxy find each other; it registers again after the lease
// is lost), and follows the prefix so that MemberList can list every
// proxy. Register runs until its client closes and cannot revoke its lease
// then, so it gets a client of its own, and Close revokes the lease: the
// entry goes at once on a clean stop instead of after the TTL.
type registration struct {
	lg     *zap.Logger
	c      *clientv3.Client // the proxy's, for following and the revoke
	regc   *clientv3.Client // Register's own
	donec  <-chan struct{}  // closed when Register has returned
	prefix string
	addr   string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	members map[string]endpoints.Endpoint
}

type proxyMeta struct {
	Name string `json:"name"`
}

// register starts the registration; regCfg configures Register's client.
func register(lg *zap.Logger, c *clientv3.Client, regCfg clientv3.Config, prefix, addr string, ttl int) (*registration, error) {
	regc, err := clientv3.New(regCfg)
	if err != nil {
		return nil, err
	}
	r := &registration{lg: lg, c: c, regc: regc, prefix: prefix, addr: addr, members: map[string]endpoints.Endpoint{}}
	r.ctx, r.cancel = context.WithCancel(c.Ctx())
	r.donec = grpcproxy.Register(lg, regc, prefix, addr, ttl)
	r.wg.Add(1)
	go r.follow()
	return r, nil
}

// retry runs f until the registration is closed, at most once a second.
func (r *registration) retry(f func() error, what string) {
	defer r.wg.Done()
	for r.ctx.Err() == nil {
		start := time.Now()
		if err := f(); err != nil && r.ctx.Err() == nil {
			r.lg.Warn(what, zap.Error(err))
		}
		select {
		case <-r.ctx.Done():
		case <-time.After(time.Until(start.Add(time.Second))):
		}
	}
}

func (r *registration) follow() {
	r.retry(func() error {
		em, err := endpoints.NewManager(r.c, r.prefix)
		if err != nil {
			return err
		}
		wc, err := em.NewWatchChannel(r.ctx)
		if err != nil {
			return err
		}
		for ups := range wc {
			r.mu.Lock()
			for _, u := range ups {
				switch u.Op {
				case endpoints.Add:
					r.members[u.Key] = u.Endpoint
				case endpoints.Delete:
					delete(r.members, u.Key)
				}
			}
			r.mu.Unlock()
		}
		return nil
	}, "cannot follow registered proxies")
}

// Members lists the registered proxies, sorted by address.
func (r *registration) Members() []*pb.Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*pb.Member, 0, len(r.members))
	for _, ep := range r.members {
		var m proxyMeta
		if s, ok := ep.Metadata.(string); ok {
			_ = json.Unmarshal([]byte(s), &m)
		}
		out = append(out, &pb.Member{Name: m.Name, ClientURLs: []string{ep.Addr}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientURLs[0] < out[j].ClientURLs[0] })
	return out
}

// Close stops registering and revokes the registration's lease.
func (r *registration) Close() {
	r.regc.Close()
	<-r.donec
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if resp, err := r.c.Get(ctx, r.prefix+"/"+r.addr); err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 {
		_, _ = r.c.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
	}
	r.cancel()
	r.wg.Wait()
}
