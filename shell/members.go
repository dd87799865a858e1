package shell

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/core/failover"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// members carries out what the failover machine decides: it runs the
// probes, each on a connection of its own to the member probed (so that a
// probe measures that member, whichever one the proxy uses), and moves the
// proxy's connection to the member the machine chose.
type members struct {
	lg      *zap.Logger
	up      *upstream
	timeout time.Duration

	mu     sync.Mutex
	known  []string                    // the members listed now
	probes map[string]*clientv3.Client // by endpoint
	closed bool
}

func newMembers(lg *zap.Logger, up *upstream, timeout time.Duration, endpoints []string) *members {
	return &members{lg: lg, up: up, timeout: timeout, known: endpoints, probes: map[string]*clientv3.Client{}}
}

// conn returns the probe connection to endpoint, dialling it on first use.
func (ms *members) conn(endpoint string) (*grpc.ClientConn, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.closed || !slices.Contains(ms.known, endpoint) {
		return nil, errors.New("no such member")
	}
	if c := ms.probes[endpoint]; c != nil {
		return c.ActiveConnection(), nil
	}
	c, err := clientv3.New(ms.up.sideConfig("probe", endpoint))
	if err != nil {
		return nil, err
	}
	ms.probes[endpoint] = c
	return c.ActiveConnection(), nil
}

// list replaces the members listed, closing the probe connections of those
// no longer listed.
func (ms *members) list(keep []string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.known = keep
	for ep, c := range ms.probes {
		if !slices.Contains(keep, ep) {
			c.Close()
			delete(ms.probes, ep)
		}
	}
}

// probe runs one probe: etcd's Status on the member, with the require-leader
// flag so that a member without a leader answers "no leader" even where
// auth refuses the call itself. ctx carries the deadline.
func (ms *members) probe(ctx context.Context, endpoint string) port.ProbeResult {
	cc, err := ms.conn(endpoint)
	if err != nil {
		return port.ProbeResult{Health: port.ProbeUnreachable}
	}
	ctx = metadata.AppendToOutgoingContext(ctx, rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
	resp, err := pb.NewMaintenanceClient(cc).Status(ctx, &pb.StatusRequest{})
	return probeResult(resp, err)
}

// probeResult reads a Status answer.
func probeResult(resp *pb.StatusResponse, err error) port.ProbeResult {
	if err == nil {
		if resp.Leader == 0 {
			return port.ProbeResult{Health: port.ProbeNoLeader, Revision: resp.GetHeader().GetRevision()}
		}
		return port.ProbeResult{Health: port.ProbeHealthy, Applied: resp.RaftAppliedIndex, Revision: resp.GetHeader().GetRevision()}
	}
	st := status.Convert(err)
	switch {
	case st.Message() == rpctypes.ErrNoLeader.Error():
		return port.ProbeResult{Health: port.ProbeNoLeader}
	case st.Code() == codes.Unavailable:
		return port.ProbeResult{Health: port.ProbeUnreachable}
	case st.Code() == codes.DeadlineExceeded || st.Code() == codes.Canceled:
		return port.ProbeResult{Health: port.ProbeNoAnswer}
	}
	// The member answered, after its leader check passed (etcd checks the
	// require-leader flag first): it refused the call itself, as it does
	// for a proxy without credentials when auth is on.
	return port.ProbeResult{Health: port.ProbeHealthy}
}

// use moves the proxy to the member the machine chose.
func (ms *members) use(sw port.Switch) {
	ms.up.use(sw.To)
	if sw.Reason == failover.ReasonStart {
		ms.lg.Info("forwarding to etcd member", zap.String("member", sw.To))
		return
	}
	ms.lg.Warn("switching etcd member", zap.String("from", sw.From), zap.String("to", sw.To), zap.String("reason", sw.Reason))
}

func (ms *members) close() {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.closed = true
	for ep, c := range ms.probes {
		c.Close()
		delete(ms.probes, ep)
	}
}

// hostOf is an endpoint's host:port (or the endpoint itself when it has
// none, as a unix socket path).
func hostOf(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		return u.Host
	}
	return endpoint
}

// autoSync refreshes the members from the cluster's member list, as
// clientv3's auto-sync does, but hands the list to the failover machine
// rather than to the connection: the machine decides which member is used.
func (ms *members) autoSync(ctx context.Context, l *loop, interval time.Duration, initial []string) {
	last := strings.Join(initial, ",")
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := ms.up.client.MemberList(sctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				ms.lg.Info("auto sync of etcd endpoints failed", zap.Error(err))
			}
			continue
		}
		var eps []string
		for _, m := range resp.Members {
			if m.Name != "" && !m.IsLearner {
				eps = append(eps, m.ClientURLs...)
			}
		}
		if len(eps) == 0 || strings.Join(eps, ",") == last {
			continue
		}
		last = strings.Join(eps, ",")
		ms.lg.Info("etcd endpoints updated by auto-sync", zap.Strings("endpoints", eps))
		ms.list(eps)
		l.input(node.SetMembers{Endpoints: eps})
	}
}
