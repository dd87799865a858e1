package shell

import (
	"context"
	"encoding/json"
	"os"
	"sort"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"
)

// registration keeps this proxy registered under --resolver-prefix with a
// lease of --resolver-ttl seconds (re-registering after the lease is lost),
// and follows the prefix so that MemberList can list every proxy. Keys and
// metadata have the layout etcd's proxy uses (prefix/addr, {"name": host}),
// so both kinds of proxy find each other.
type registration struct {
	lg     *zap.Logger
	c      *clientv3.Client
	prefix string
	addr   string
	ttl    int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	members map[string]endpoints.Endpoint
}

type proxyMeta struct {
	Name string `json:"name"`
}

func register(lg *zap.Logger, c *clientv3.Client, prefix, addr string, ttl int) *registration {
	r := &registration{lg: lg, c: c, prefix: prefix, addr: addr, ttl: ttl, members: map[string]endpoints.Endpoint{}}
	r.ctx, r.cancel = context.WithCancel(c.Ctx())
	r.wg.Add(2)
	go r.keepRegistered()
	go r.follow()
	return r
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

func (r *registration) keepRegistered() {
	r.retry(func() error {
		ss, err := concurrency.NewSession(r.c, concurrency.WithTTL(r.ttl), concurrency.WithContext(r.ctx))
		if err != nil {
			return err
		}
		defer func() {
			// The session's context is already canceled when the proxy
			// stops, so revoke with a fresh, bounded one: the entry goes at
			// once instead of after the TTL.
			ss.Orphan()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, _ = r.c.Revoke(ctx, ss.Lease())
		}()
		em, err := endpoints.NewManager(r.c, r.prefix)
		if err != nil {
			return err
		}
		host, _ := os.Hostname()
		meta, _ := json.Marshal(proxyMeta{Name: host})
		ep := endpoints.Endpoint{Addr: r.addr, Metadata: string(meta)}
		if err := em.AddEndpoint(r.ctx, r.prefix+"/"+r.addr, ep, clientv3.WithLease(ss.Lease())); err != nil {
			return err
		}
		r.lg.Info("registered proxy", zap.String("prefix", r.prefix), zap.String("addr", r.addr), zap.Int("lease-ttl", r.ttl))
		select {
		case <-r.ctx.Done():
			return nil
		case <-ss.Done():
			r.lg.Warn("registration lease lost; registering again")
			return nil
		}
	}, "cannot register proxy")
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

func (r *registration) Close() {
	r.cancel()
	r.wg.Wait()
}
