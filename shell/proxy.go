package shell

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"

	"github.com/benbjohnson/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/soheilhy/cmux"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/failover"
	"github.com/etcdproxy/etcdproxy/core/keyspace"
	"github.com/etcdproxy/etcdproxy/core/lease"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/watch"
)

// ReadyMessage is the log message that says the proxy serves clients; it is
// etcd's own, so tools that wait for etcd's proxy keep working.
const ReadyMessage = "started gRPC proxy"

// Proxy is a running proxy: a listener serving etcd's gRPC API (and HTTP
// /metrics, /health on the same port), forwarding to an etcd cluster.
type Proxy struct {
	cfg      Config
	lg       *zap.Logger
	up       *upstream
	grpc     *grpc.Server
	warm     *warmStacks
	http     *http.Server
	metrics  *http.Server
	lis      net.Listener
	mux      cmux.CMux
	registry *prometheus.Registry
	reg      *registration
	loop     *loop
	members  *members
	tlsInfo  *transport.TLSInfo
	self     *clientv3.Client // client of this proxy, for /proxy/health
	errc     chan error

	closeOnce sync.Once
	// closeLeasing stops the leasing KV (--experimental-leasing-prefix).
	closeLeasing func()
	closeErr     error
}

// Start validates cfg, listens, connects to etcd and serves. It returns once
// the proxy accepts clients; a cluster that is not reachable yet does not
// stop it (requests get Unavailable until a member answers).
func Start(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, lg: cfg.logger(), errc: make(chan error, 4), registry: prometheus.NewRegistry()}
	p.lg.Info("starting gRPC proxy", cfg.configFields()...)
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()

	tlsInfo, err := listenTLS(&p.cfg, p.lg)
	if err != nil {
		return nil, err
	}
	p.tlsInfo = tlsInfo
	if err := p.listen(tlsInfo); err != nil {
		return nil, err
	}
	if p.up, err = dialUpstream(&p.cfg); err != nil {
		return nil, fmt.Errorf("connecting to etcd: %w", err)
	}
	if cfg.ResolverPrefix != "" {
		// Like etcd's proxy, registration lives inside the namespace.
		if p.reg, err = register(p.lg, p.up.client, p.up.sideConfig("register", cfg.Endpoints...), cfg.Namespace+cfg.ResolverPrefix, cfg.AdvertiseClientURL, cfg.ResolverTTL); err != nil {
			return nil, fmt.Errorf("registering: %w", err)
		}
	}
	p.grpc = p.newGRPCServer()
	p.http = &http.Server{Handler: p.httpHandler(true), ReadHeaderTimeout: 10 * time.Second}
	if tlsInfo != nil {
		if p.http.TLSConfig, err = tlsInfo.ServerConfig(); err != nil {
			return nil, err
		}
	}
	if cfg.MetricsAddr != "" {
		if err := p.serveMetrics(tlsInfo); err != nil {
			return nil, err
		}
	}

	grpcL := p.mux.Match(cmux.HTTP2())
	var httpL net.Listener
	if tlsInfo == nil {
		httpL = p.mux.Match(cmux.HTTP1())
	} else {
		httpL = p.mux.Match(cmux.Any())
	}
	p.serve(func() error { return p.grpc.Serve(grpcL) })
	p.serve(func() error { return p.http.Serve(httpL) })
	p.serve(p.mux.Serve)

	p.lg.Info(ReadyMessage, zap.String("address", p.Addr()))
	ok = true
	return p, nil
}

func (p *Proxy) listen(tlsInfo *transport.TLSInfo) error {
	l, err := net.Listen("tcp", p.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("--listen-addr %s: %w", p.cfg.ListenAddr, err)
	}
	if l, err = transport.NewKeepAliveListener(l, "tcp", nil); err != nil {
		return err
	}
	if tlsInfo != nil {
		if l, err = transport.NewTLSListener(l, tlsInfo); err != nil {
			return err
		}
	}
	p.lis = l
	p.mux = cmux.New(l)
	p.lg.Info("listening for gRPC proxy client requests", zap.String("address", l.Addr().String()))
	return nil
}

func (p *Proxy) serve(f func() error) {
	go func() {
		if err := f(); err != nil && !isClosedErr(err) {
			p.errc <- err
		}
	}()
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) ||
		errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, cmux.ErrListenerClosed) ||
		errors.Is(err, cmux.ErrServerClosed) || transport.IsClosedConnError(err)
}

func (p *Proxy) newGRPCServer() *grpc.Server {
	cfg := &p.cfg
	// Handling time by method, for latency panels and alerts: buckets from
	// 0.5 ms (a cached read) to 10 s (a slow linearizable call).
	metrics := newGRPCMetrics([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10})
	p.registry.MustRegister(metrics, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Unary calls run on workers with grown stacks (warmstack.go).
	p.warm = newWarmStacks(warmStackWorkers, warmStackIdle)
	unary := []grpc.UnaryServerInterceptor{p.warm.unary, metrics.unary}
	stream := []grpc.StreamServerInterceptor{metrics.stream}
	if cfg.GRPCLogging {
		unary = append(unary, interceptors.UnaryServerInterceptor(grpcLogReportable(p.lg)))
		stream = append(stream, interceptors.StreamServerInterceptor(grpcLogReportable(p.lg)))
	}
	if cfg.MaxStreamsPerConnection > 0 {
		stream = append([]grpc.StreamServerInterceptor{streamLimit(cfg.MaxStreamsPerConnection)}, stream...)
	}
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(cfg.MaxSendBytes + grpcOverheadBytes),
		grpc.MaxSendMsgSize(cfg.MaxRecvBytes),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.ForceServerCodecV2(newWatchCodec()),
		grpc.Creds(p.connTagger()),
		// Streams start on gRPC's long-lived workers while one is idle
		// (warmstack.go says why a reused stack matters).
		grpc.NumStreamWorkers(grpcStreamWorkers),
	}
	if cfg.GRPCKeepAliveMinTime > 0 {
		opts = append(opts, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.GRPCKeepAliveMinTime}))
	}
	if cfg.GRPCKeepAliveInterval > 0 || cfg.GRPCKeepAliveTimeout > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.GRPCKeepAliveInterval, Timeout: cfg.GRPCKeepAliveTimeout}))
	}
	s := grpc.NewServer(opts...)

	ns := keyspace.New(cfg.Namespace)
	nsActive := !ns.Empty()
	c := p.up.client
	clk := cfg.Clock
	if clk == nil {
		clk = clock.New()
	}
	p.members = newMembers(p.lg.Named("failover"), p.up, cfg.failoverTimeout(), cfg.Endpoints)
	p.loop = newLoop(p.lg.Named("core"), clk, node.Config{
		Port: port.Config{StreamBufferBytes: cfg.WatchStreamBufferBytes, TotalBufferBytes: cfg.WatchTotalBufferBytes},
		Watch: watch.Config{
			Prefix:               ns,
			HistoryEvents:        cfg.WatchHistoryEvents,
			FragmentBytes:        cfg.MaxSendBytes,
			ProgressInterval:     cfg.WatchProgressInterval,
			MaxWatchersPerStream: cfg.MaxWatchesPerStream,
		},
		Failover: failover.Config{Timeout: cfg.failoverTimeout()},
		Lease:    lease.Config{Namespaced: nsActive},
		Cache: cache.Config{
			MaxBytes:        cfg.CacheBytes,
			MaxEntryBytes:   cfg.CacheMaxEntryBytes,
			ConsistentReads: cfg.CacheConsistentReads,
			IdleAfter:       cfg.CacheIdleAfter,
		},
		Members: cfg.Endpoints,
	}, pb.NewKVClient(p.up.conn), pb.NewWatchClient(p.up.conn), pb.NewLeaseClient(p.up.conn), p.members)
	kv, kvns := clientv3.RetryKVClient(c), ns
	if cfg.LeasingPrefix != "" {
		lkv, closeFn, err := newLeasingKV(c, cfg.Namespace, cfg.LeasingPrefix)
		if err != nil {
			p.lg.Warn("leasing KV not started; KV requests go to etcd", zap.Error(err))
		} else {
			// The leasing KV applies the namespace itself.
			kv, kvns, p.closeLeasing = lkv, keyspace.New(""), closeFn
		}
	}
	kvs := &kvServer{up: kv, ns: kvns, cache: p.loop.cache}
	if !nsActive && p.closeLeasing == nil && !cfg.GRPCLogging {
		s.RegisterService(passthroughKV(kvs, p.up.conn))
	} else {
		pb.RegisterKVServer(s, kvs)
	}
	p.up.notifyDrop(func() { p.loop.input(node.Suspect{}) })
	if cfg.EndpointsAutoSyncInterval > 0 {
		go p.members.autoSync(c.Ctx(), p.loop, cfg.EndpointsAutoSyncInterval, cfg.Endpoints)
	}
	p.registry.MustRegister(newNodeCollector(p.loop))
	pb.RegisterWatchServer(s, &watchServer{ns: ns, loop: p.loop})
	ls := &leaseServer{up: clientv3.RetryLeaseClient(c), ns: ns, loop: p.loop}
	p.loop.leaseCheck = ls.check // before serving: nothing asks for a check yet
	pb.RegisterLeaseServer(s, ls)
	cluster := &clusterServer{up: clientv3.RetryClusterClient(c), nsActive: nsActive, advertise: cfg.AdvertiseClientURL}
	if p.reg != nil {
		cluster.members = p.reg.Members
	}
	pb.RegisterClusterServer(s, cluster)
	pb.RegisterMaintenanceServer(s, &maintenanceServer{up: clientv3.RetryMaintenanceClient(c, p.up.conn), nsActive: nsActive})
	pb.RegisterAuthServer(s, &authServer{up: clientv3.RetryAuthClient(c), nsActive: nsActive, ids: p.loop.ids})
	v3electionpb.RegisterElectionServer(s, &electionServer{up: v3electionpb.NewElectionClient(p.up.conn), ns: ns})
	v3lockpb.RegisterLockServer(s, &lockServer{up: v3lockpb.NewLockClient(p.up.conn), ns: ns})
	metrics.init(s)
	return s
}

// connTagger gives each client connection its state (conntag.go): under
// --experimental-serializable-ordering one floor shared by all, otherwise
// a floor of its own.
func (p *Proxy) connTagger() connTagger {
	t := connTagger{up: p.up, level: credentials.NoSecurity}
	if p.cfg.SerializableOrdering {
		t.shared = &floor{}
	}
	if p.tlsInfo != nil {
		t.level = credentials.PrivacyAndIntegrity
	}
	return t
}

// Addr returns the address the proxy listens on.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Client returns the proxy's upstream etcd client.
func (p *Proxy) Client() *clientv3.Client { return p.up.client }

// UpstreamMember returns the host:port of the etcd member the proxy
// forwards to.
func (p *Proxy) UpstreamMember() string { return p.up.Member() }

// Err reports a server that stopped on its own, which ends the proxy.
func (p *Proxy) Err() <-chan error { return p.errc }

// Close stops serving, ends every client stream and closes the connection
// to etcd.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		if p.reg != nil {
			p.reg.Close()
		}
		if p.closeLeasing != nil {
			p.closeLeasing()
		}
		if p.metrics != nil {
			p.metrics.Close()
		}
		if p.grpc != nil {
			p.grpc.Stop()
			p.warm.stop()
		}
		if p.loop != nil {
			p.loop.close()
		}
		if p.members != nil {
			p.members.close()
		}
		if p.http != nil {
			p.http.Close()
		}
		if p.mux != nil {
			p.mux.Close()
		}
		if p.lis != nil {
			p.lis.Close()
		}
		if p.self != nil {
			p.self.Close()
		}
		if p.up != nil {
			p.closeErr = p.up.Close()
			if errors.Is(p.closeErr, context.Canceled) {
				p.closeErr = nil
			}
		}
		p.lg.Info("stopped gRPC proxy")
	})
	return p.closeErr
}

// CoreState returns the core node's counters and gauges now.
func (p *Proxy) CoreState() (node.Stats, node.Gauges) {
	s := p.loop.snapshot()
	return s.Stats, s.Gauges
}
