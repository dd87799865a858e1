package shell

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/core/failover"
)

// pickFirst makes the upstream connection use one member at a time and move
// to the next address only when the one in use fails. clientv3's resolver
// asks for round_robin in its service config; disabling resolver-provided
// service config lets this default apply instead.
const pickFirst = `{"loadBalancingConfig":[{"pick_first":{}}]}`

// upstream is the proxy's connection to the etcd cluster.
type upstream struct {
	lg     *zap.Logger
	client *clientv3.Client
	conn   *grpc.ClientConn
	tls    *tls.Config // nil for plaintext

	mu     sync.Mutex
	member string // host:port of the member in use
	// retryWait bounds how long a call that reached no member waits for a
	// connection before it gives up (see unaryInflight).
	retryWait time.Duration
	// endpoint is the endpoint the client is set to (its first, at dial).
	endpoint string
	onDrop   func() // called when the connection leaves Ready

	calls inflight // calls in flight, by member
}

// notifyDrop sets what to call when the connection to the member in use
// drops.
func (u *upstream) notifyDrop(f func()) {
	u.mu.Lock()
	u.onDrop = f
	u.mu.Unlock()
}

func dialUpstream(cfg *Config) (*upstream, error) {
	u := &upstream{lg: cfg.logger(), retryWait: cfg.FailoverTimeout}
	if u.retryWait <= 0 {
		u.retryWait = failover.DefaultTimeout
	}
	ccfg := clientv3.Config{
		// The failover machine chooses the member in use, starting with
		// the first; the connection only ever knows that one.
		Endpoints:            cfg.Endpoints[:1],
		DialKeepAliveTime:    cfg.DialKeepAliveTime,
		DialKeepAliveTimeout: cfg.DialKeepAliveTimeout,
		PermitWithoutStream:  cfg.PermitWithoutStream,
		// The proxy's server already bounds request size (see Config);
		// a second, smaller bound here would answer differently from etcd.
		MaxCallSendMsgSize: upstreamSendLimit(cfg),
		MaxCallRecvMsgSize: cfg.MaxRecvBytes,
		// clientv3 logs every failed attempt at warn level; a proxy relays
		// client errors as a matter of course, so only its errors are kept.
		Logger: u.lg.Named("client").WithOptions(zap.IncreaseLevel(zap.ErrorLevel)),
		DialOptions: []grpc.DialOption{
			// clientv3 applies the two limits above only to calls made
			// through its own API; the proxy forwards with the raw
			// etcdserverpb clients on the same connection, so they are
			// the connection's defaults too (else gRPC's 4 MiB receive
			// limit would refuse a large Range that etcd answered).
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.MaxRecvBytes), grpc.MaxCallSendMsgSize(upstreamSendLimit(cfg))),
			grpc.WithDisableServiceConfig(),
			grpc.WithDefaultServiceConfig(pickFirst),
			grpc.WithChainUnaryInterceptor(u.unaryInflight),
			grpc.WithChainStreamInterceptor(u.streamInflight),
			connectParams,
		},
	}
	tlsCfg, err := upstreamTLS(cfg, u.lg)
	if err != nil {
		return nil, err
	}
	ccfg.TLS = tlsCfg
	u.tls = tlsCfg
	c, err := clientv3.New(ccfg)
	if err != nil {
		return nil, err
	}
	u.client = c
	u.conn = c.ActiveConnection()
	u.member = hostOf(cfg.Endpoints[0])
	u.endpoint = cfg.Endpoints[0]
	go u.monitor(c.Ctx())
	return u, nil
}

// connectParams: gRPC's default reconnect backoff grows to two minutes; a
// proxy must notice a member coming back within seconds.
var connectParams = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 5 * time.Second,
})

// sideConfig is the client configuration of a connection of the proxy's
// own beside the one it forwards on (name: what it is for, in its logs):
// the same TLS, the same reconnect backoff, nothing else.
func (u *upstream) sideConfig(name string, endpoints ...string) clientv3.Config {
	return clientv3.Config{
		Endpoints:   endpoints,
		TLS:         u.tls,
		Logger:      u.lg.Named(name).WithOptions(zap.IncreaseLevel(zap.ErrorLevel)),
		DialOptions: []grpc.DialOption{connectParams},
	}
}

// use moves the connection to endpoint and ends every call still on the
// member left (gRPC would let them run there).
func (u *upstream) use(endpoint string) {
	u.mu.Lock()
	left, same := u.member, u.endpoint == endpoint
	u.member, u.endpoint = hostOf(endpoint), endpoint
	u.mu.Unlock()
	if !same {
		// (Not when it is already set: at start, clientv3's resolver may
		// still be being built, and SetEndpoints races with that.)
		u.client.SetEndpoints(endpoint)
	}
	if left != u.member {
		u.calls.leave(left)
	}
}

// upstreamSendLimit is the largest request the proxy sends to etcd: the
// largest its own server accepts (so that etcd, not the proxy, answers a
// request that is too large), and no more than the receive limit, as
// clientv3 requires.
func upstreamSendLimit(cfg *Config) int {
	return min(cfg.MaxSendBytes+grpcOverheadBytes, cfg.MaxRecvBytes)
}

// Member returns the host:port of the etcd member in use.
func (u *upstream) Member() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.member
}

// monitor keeps the connection to etcd eager: it reconnects as soon as the
// member in use goes away instead of waiting for the next request, and it
// logs whether any member is reachable.
func (u *upstream) monitor(ctx context.Context) {
	reported := connectivity.Idle
	prev := connectivity.Idle
	for {
		st := u.conn.GetState()
		if prev == connectivity.Ready && st != connectivity.Ready && st != connectivity.Shutdown {
			u.mu.Lock()
			f := u.onDrop
			u.mu.Unlock()
			if f != nil {
				f()
			}
		}
		prev = st
		switch st {
		case connectivity.Idle:
			u.conn.Connect()
		case connectivity.Ready:
			if reported != st {
				u.lg.Info("connected to etcd", zap.Strings("endpoints", u.client.Endpoints()))
			}
			reported = st
		case connectivity.TransientFailure:
			if reported != st {
				u.lg.Warn("no etcd endpoint reachable; retrying", zap.Strings("endpoints", u.client.Endpoints()))
			}
			reported = st
		case connectivity.Shutdown:
			return
		}
		if !u.conn.WaitForStateChange(ctx, st) {
			return
		}
	}
}

func (u *upstream) Close() error { return u.client.Close() }

// deadlineMargin is how much earlier than the client's own deadline the
// proxy gives up on etcd while no member is connected, so that the client
// hears why (Unavailable) instead of only seeing its deadline pass. While
// a member is connected a call keeps the client's deadline, so that a call
// that is merely slow ends as it would on etcd: with the client's own
// DeadlineExceeded.
func deadlineMargin(remaining time.Duration) time.Duration {
	m := remaining / 10
	if m > 100*time.Millisecond {
		m = 100 * time.Millisecond
	}
	return m
}

// serving reports whether the connection to etcd is connected to a member.
func (u *upstream) serving() bool { return u.conn.GetState() == connectivity.Ready }

// outgoing builds the context for a call to etcd on behalf of the client
// whose request context is ctx: the client's auth token and require-leader
// flag travel along, and the deadline is the client's, less a small margin
// while no member is connected. (etcd's proxy forwards the token with
// grpcproxy.AuthUnaryClientInterceptor and AuthStreamClientInterceptor;
// they carry the token alone, so the proxy keeps this one function for
// token, require-leader and deadline together.)
func outgoing(ctx context.Context) (context.Context, context.CancelFunc) {
	out, cancel := outgoingUnary(ctx)
	if cancel == nil {
		return context.WithCancel(out)
	}
	return out, cancel
}

// outgoingUnary is outgoing for a unary call, which is over when its
// handler returns: cancel is nil unless the deadline was shortened.
func outgoingUnary(ctx context.Context) (context.Context, context.CancelFunc) {
	out := ctx
	var kv []string
	if t := metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameGRPC); len(t) > 0 {
		kv = append(kv, rpctypes.TokenFieldNameGRPC, t[0])
	}
	if l := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey); len(l) > 0 {
		kv = append(kv, rpctypes.MetadataRequireLeaderKey, l[0])
	}
	if len(kv) > 0 {
		out = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	if d, ok := ctx.Deadline(); ok {
		if c := connOf(ctx); c == nil || c.up == nil || !c.up.serving() {
			return context.WithDeadline(out, d.Add(-deadlineMargin(time.Until(d))))
		}
	}
	return out, nil
}

// upstreamErr turns an error from etcd into the one the client gets. etcd's
// own errors pass through unchanged. When the proxy's shortened deadline ran
// out while the client's has not, the client gets etcd's "request timed out"
// (Unavailable), the answer etcd gives when it cannot finish in time.
func upstreamErr(clientCtx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if clientCtx.Err() == nil {
		code := status.Code(err)
		if code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			return rpctypes.ErrGRPCTimeout
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.FromContextError(err).Err()
}

// forward runs one unary call to etcd on behalf of a client.
func forward[Req, Resp any](ctx context.Context, call func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	out, cancel := outgoingUnary(ctx)
	if cancel != nil {
		defer cancel()
	}
	resp, err := call(out, req)
	return resp, upstreamErr(ctx, err)
}
