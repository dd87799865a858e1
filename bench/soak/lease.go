package main

// The leases: granted through the proxy, each with one key, kept alive
// through the proxy with clientv3's KeepAlive for the whole run, and
// checked on etcd directly at the end. A control group does the same
// directly against the members, so that a loss through the proxy can be
// told from one any client would have seen (a cluster too starved to
// answer keep-alives within the TTL).

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type heldLease struct {
	id  clientv3.LeaseID
	key string
	cli *clientv3.Client

	mu         sync.Mutex
	lostAt     time.Duration // when it was first found lost
	lost       []string      // why, each time it was found lost; none if not lost
	renewed    int           // keep-alive answers received
	lastAnswer time.Duration // when the last one came
}

func (l *heldLease) markLost(at time.Duration, why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lost) == 0 {
		l.lostAt = at
	}
	l.lost = append(l.lost, why)
}

type leaseLoad struct {
	o       options
	n       int
	via     string // "proxy" or "direct": in the keys and the error tally
	clients []*clientv3.Client
	clk     clock
	errs    *tally

	leases []*heldLease
	ending atomic.Bool // set before the keep-alives are cancelled
	wg     sync.WaitGroup
}

// grant grants the leases and puts their keys, one client at a time each.
func (ll *leaseLoad) grant(ctx context.Context) error {
	ll.leases = make([]*heldLease, ll.n)
	var wg sync.WaitGroup
	errc := make(chan error, len(ll.clients))
	for w, cli := range ll.clients {
		wg.Go(func() {
			for i := w; i < len(ll.leases); i += len(ll.clients) {
				l, err := ll.grantOne(ctx, cli, i)
				if err != nil {
					errc <- err
					return
				}
				ll.leases[i] = l
			}
		})
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func (ll *leaseLoad) grantOne(ctx context.Context, cli *clientv3.Client, i int) (*heldLease, error) {
	ctx, cancel := context.WithTimeout(ctx, ll.o.rpcTimeout)
	defer cancel()
	g, err := cli.Grant(ctx, ll.o.leaseTTL)
	if err != nil {
		return nil, fmt.Errorf("granting lease %d (%s): %w", i, ll.via, err)
	}
	l := &heldLease{id: g.ID, key: fmt.Sprintf("soak/lease-%s/%06d", ll.via, i), cli: cli}
	if _, err := cli.Put(ctx, l.key, "v", clientv3.WithLease(g.ID)); err != nil {
		return nil, fmt.Errorf("putting lease %d's key (%s): %w", i, ll.via, err)
	}
	return l, nil
}

// keepAlive keeps every lease alive until ctx ends. A keep-alive channel
// that closes before end is called loses its lease. clientv3 renews a
// lease TTL/3 after its last renewal, so the keep-alives are started over
// TTL/3, in order that the renewals of leases granted together do not come
// in bursts.
func (ll *leaseLoad) keepAlive(ctx context.Context) {
	spread := time.Duration(ll.o.leaseTTL) * time.Second / 3
	rpc := "LeaseKeepAlive (" + ll.via + ")"
	for i, l := range ll.leases {
		ll.wg.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(spread * time.Duration(i) / time.Duration(len(ll.leases))):
			}
			ch, err := l.cli.KeepAlive(ctx, l.id)
			if err != nil {
				if !ll.ending.Load() {
					l.markLost(ll.clk.now(), fmt.Sprintf("KeepAlive: %v", err))
					ll.errs.add(rpc, err)
				}
				return
			}
			for range ch {
				l.mu.Lock()
				l.renewed++
				l.lastAnswer = ll.clk.now()
				l.mu.Unlock()
			}
			if !ll.ending.Load() {
				l.markLost(ll.clk.now(), "keep-alive channel closed during the run")
				ll.errs.addKind(rpc, "keep-alive channel closed")
			}
		})
	}
}

// end marks the run's end: channels closing from now on are not losses.
// The caller then cancels the keep-alives' context and calls wait.
func (ll *leaseLoad) end() { ll.ending.Store(true) }

func (ll *leaseLoad) wait() { ll.wg.Wait() }

// check asks etcd directly, through direct, whether each lease still
// exists with its key attached, and its key with the lease.
func (ll *leaseLoad) check(ctx context.Context, direct *clientv3.Client) {
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 20 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ll.leases) {
					return
				}
				l := ll.leases[i]
				if why := checkLease(ctx, direct, l, ll.o.rpcTimeout); why != "" {
					l.markLost(ll.clk.now(), "at the end: "+why)
				}
			}
		})
	}
	wg.Wait()
}

func checkLease(ctx context.Context, direct *clientv3.Client, l *heldLease, timeout time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ttl, err := direct.TimeToLive(ctx, l.id, clientv3.WithAttachedKeys())
	if err != nil {
		return fmt.Sprintf("TimeToLive on etcd: %v", err)
	}
	if ttl.TTL <= 0 {
		return fmt.Sprintf("etcd no longer knows the lease (TTL %d)", ttl.TTL)
	}
	attached := false
	for _, k := range ttl.Keys {
		attached = attached || string(k) == l.key
	}
	if !attached {
		return fmt.Sprintf("the lease's key is not attached to it (keys %q)", ttl.Keys)
	}
	resp, err := direct.Get(ctx, l.key)
	if err != nil {
		return fmt.Sprintf("Get of the key on etcd: %v", err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != int64(l.id) {
		return "the lease's key is gone or has another lease"
	}
	return ""
}

// lost lists the leases lost.
func (ll *leaseLoad) lost() []*heldLease {
	var out []*heldLease
	for _, l := range ll.leases {
		l.mu.Lock()
		if len(l.lost) > 0 {
			out = append(out, l)
		}
		l.mu.Unlock()
	}
	return out
}

// why is every reason the lease was found lost.
func (l *heldLease) why() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lost, "; ")
}
