package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/client/pkg/v3/logutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapgrpc"
	"google.golang.org/grpc/grpclog"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/shell"
)

type startOptions struct {
	cfg shell.Config

	embedded          bool
	embeddedClientURL string
	embeddedPeerURL   string

	// DNS discovery of the endpoints
	discoverySrv, discoverySrvName string
	insecureDiscovery              bool
}

func newStartCommand() *cobra.Command {
	o := &startOptions{cfg: shell.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   "start",
		Short: "start the proxy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd)
		},
	}
	f := cmd.Flags()
	c := &o.cfg
	f.StringVar(&c.ListenAddr, "listen-addr", c.ListenAddr, "listen address")
	f.StringSliceVar(&c.Endpoints, "endpoints", c.Endpoints, "comma separated etcd cluster endpoints")
	f.DurationVar(&c.EndpointsAutoSyncInterval, "endpoints-auto-sync-interval", 0, "etcd endpoints auto sync interval (disabled by default)")
	f.StringVar(&c.AdvertiseClientURL, "advertise-client-url", c.AdvertiseClientURL, "advertise address to register (must be reachable by client)")
	f.StringVar(&c.ResolverPrefix, "resolver-prefix", "", "prefix to use for registering proxy (must be shared with other grpc-proxy members)")
	f.IntVar(&c.ResolverTTL, "resolver-ttl", 0, "specify TTL, in seconds, when registering proxy endpoints")
	f.StringVar(&c.Namespace, "namespace", "", "string to prefix to all keys for namespacing requests")
	f.StringVar(&c.MetricsAddr, "metrics-addr", "", "listen for endpoint /metrics requests on an additional interface")
	f.BoolVar(&c.EnablePprof, "enable-pprof", false, `Enable runtime profiling data via HTTP server. Address is at client URL + "/debug/pprof/"`)
	f.StringVar(&c.DataDir, "data-dir", c.DataDir, "Data directory for persistent data (auto-tls certificates; the embedded etcd's data with --embedded-etcd)")
	f.IntVar(&c.MaxSendBytes, "max-send-bytes", c.MaxSendBytes, "message send limits in bytes (default value is 1.5 MiB)")
	f.IntVar(&c.MaxRecvBytes, "max-recv-bytes", c.MaxRecvBytes, "message receive limits in bytes (default value is math.MaxInt32)")
	f.Uint32Var(&c.MaxConcurrentStreams, "max-concurrent-streams", c.MaxConcurrentStreams, "Maximum concurrent streams that each client can open at a time.")
	f.DurationVar(&c.GRPCKeepAliveMinTime, "grpc-keepalive-min-time", c.GRPCKeepAliveMinTime, "Minimum interval duration that a client should wait before pinging proxy.")
	f.DurationVar(&c.GRPCKeepAliveInterval, "grpc-keepalive-interval", c.GRPCKeepAliveInterval, "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).")
	f.DurationVar(&c.GRPCKeepAliveTimeout, "grpc-keepalive-timeout", c.GRPCKeepAliveTimeout, "Additional duration of wait before closing a non-responsive connection (0 to disable).")
	f.DurationVar(&c.DialKeepAliveTime, "dial-keepalive-time", 0, "keepalive time for client(grpc-proxy) connections (default 0, disable).")
	f.DurationVar(&c.DialKeepAliveTimeout, "dial-keepalive-timeout", c.DialKeepAliveTimeout, "keepalive timeout for client(grpc-proxy) connections (default 20s).")
	f.BoolVar(&c.PermitWithoutStream, "permit-without-stream", false, "Enable client(grpc-proxy) to send keepalive pings even with no active RPCs.")
	f.DurationVar(&c.FailoverTimeout, "failover-timeout", c.FailoverTimeout, "Leave the etcd member in use for a healthy one once it has not answered a health probe, had no raft leader, or been behind the cluster for this long (probes go to every member 4 times per period).")
	f.BoolVar(&c.Debug, "debug", false, "Enable debug-level logging for grpc-proxy.")

	f.StringVar(&c.Cert, "cert", "", "identify secure connections with etcd servers using this TLS certificate file")
	f.StringVar(&c.Key, "key", "", "identify secure connections with etcd servers using this TLS key file")
	f.StringVar(&c.CACert, "cacert", "", "verify certificates of TLS-enabled secure etcd servers using this CA bundle")
	f.BoolVar(&c.InsecureSkipTLSVerify, "insecure-skip-tls-verify", false, "skip authentication of etcd server TLS certificates (CAUTION: this option should be enabled only for testing purposes)")

	f.StringVar(&c.CertFile, "cert-file", "", "identify secure connections to the proxy using this TLS certificate file")
	f.StringVar(&c.KeyFile, "key-file", "", "identify secure connections to the proxy using this TLS key file")
	f.StringVar(&c.TrustedCAFile, "trusted-ca-file", "", "verify certificates of TLS-enabled secure proxy using this CA bundle")
	f.StringSliceVar(&c.ListenCipherSuites, "listen-cipher-suites", nil, "Comma-separated list of supported TLS cipher suites between client/proxy (empty will be auto-populated by Go).")
	f.BoolVar(&c.AutoTLS, "auto-tls", false, "proxy TLS using generated certificates")
	f.StringVar(&c.ClientCRLFile, "client-crl-file", "", "proxy client certificate revocation list file.")
	f.UintVar(&c.SelfSignedCertValidity, "self-signed-cert-validity", c.SelfSignedCertValidity, "The validity period of the proxy certificates, unit is year")
	f.StringVar(&c.TLSMinVersion, "tls-min-version", c.TLSMinVersion, "Minimum TLS version supported by grpc proxy. Possible values: TLS1.2, TLS1.3.")
	f.StringVar(&c.TLSMaxVersion, "tls-max-version", "", "Maximum TLS version supported by grpc proxy. Possible values: TLS1.2, TLS1.3 (empty defers to Go).")

	f.IntVar(&c.WatchHistoryEvents, "watch-history-events", c.WatchHistoryEvents, "events of recent history kept per watched key range; a watcher starting within it shares the range's upstream watcher")
	f.IntVar(&c.WatchStreamBufferBytes, "watch-stream-buffer-bytes", c.WatchStreamBufferBytes, "bytes of watch responses queued per client stream before its watchers pause and catch up later")
	f.IntVar(&c.WatchTotalBufferBytes, "watch-total-buffer-bytes", c.WatchTotalBufferBytes, "bytes of watch and keep-alive responses queued for all client streams together; above it, any stream with more than 64 KiB queued pauses as if over its own bound")
	f.IntVar(&c.CacheBytes, "cache-bytes", c.CacheBytes, "memory, in bytes, the read cache's Range responses may hold, least recently used out (0 disables the cache)")
	f.IntVar(&c.CacheMaxEntryBytes, "cache-max-entry-bytes", 0, "largest Range response the read cache keeps, in bytes (default a sixteenth of --cache-bytes)")
	f.BoolVar(&c.CacheConsistentReads, "cache-consistent-reads", c.CacheConsistentReads, "answer linearizable reads from the read cache once etcd's current revision is confirmed (one fetch for every concurrent read) and delivered to the cache")
	f.IntVar(&c.MaxWatchesPerStream, "max-watches-per-stream", c.MaxWatchesPerStream, "watches one client watch stream may hold; a create beyond it is refused with a reason naming this flag (0: no limit)")
	f.IntVar(&c.MaxStreamsPerConnection, "max-streams-per-connection", c.MaxStreamsPerConnection, "streams one client connection may have open; a stream beyond it is refused with ResourceExhausted (0: no limit)")
	f.DurationVar(&c.WatchProgressInterval, "watch-progress-notify-interval", c.WatchProgressInterval, "the proxy's own interval of progress notifications to idle watchers that asked for them; 0 passes on etcd's, at the cluster's --watch-progress-notify-interval")

	f.StringVar(&o.discoverySrv, "discovery-srv", "", "domain name to query for SRV records describing cluster endpoints")
	f.StringVar(&o.discoverySrvName, "discovery-srv-name", "", "service name to query when using DNS discovery")
	f.BoolVar(&o.insecureDiscovery, "insecure-discovery", false, "accept insecure SRV records")
	f.BoolVar(&c.SerializableOrdering, "experimental-serializable-ordering", false, "Ensure serializable reads have monotonically increasing store revisions across endpoints: one revision floor for every client connection (each connection always has its own).")
	f.StringVar(&c.LeasingPrefix, "experimental-leasing-prefix", "", "leasing metadata prefix for disconnected linearized reads.")
	f.BoolVar(&c.GRPCLogging, "experimental-enable-grpc-logging", false, "logging all grpc requests and responses")

	f.BoolVar(&o.embedded, "embedded-etcd", false, "also run a single etcd member in-process and proxy to it (data in a temporary directory unless --data-dir is set)")
	f.StringVar(&o.embeddedClientURL, "embedded-client-url", "http://127.0.0.1:2379", "client URL of the embedded etcd member (with --embedded-etcd)")
	f.StringVar(&o.embeddedPeerURL, "embedded-peer-url", "http://127.0.0.1:2380", "peer URL of the embedded etcd member (with --embedded-etcd)")
	return cmd
}

func (o *startOptions) run(cmd *cobra.Command) error {
	lvl := zap.InfoLevel
	if o.cfg.Debug {
		lvl = zap.DebugLevel
	}
	lg, err := logutil.CreateDefaultZapLogger(lvl)
	if err != nil {
		return err
	}
	defer func() { _ = lg.Sync() }()
	if o.cfg.Debug {
		grpclog.SetLoggerV2(zapgrpc.NewLogger(lg))
	}
	o.cfg.Logger = lg

	if o.embedded {
		if cmd.Flags().Changed("endpoints") {
			return errors.New("--embedded-etcd and --endpoints cannot be combined: the embedded member is the endpoint")
		}
		m, cleanup, err := o.startEmbedded(cmd, lg)
		if err != nil {
			return err
		}
		defer cleanup()
		o.cfg.Endpoints = []string{m.ClientURL}
	} else {
		if o.discoverySrv != "" {
			eps, err := discoverEndpoints(lg, o.discoverySrv, o.cfg.CACert, o.insecureDiscovery, o.discoverySrvName)
			if err != nil {
				return err
			}
			if len(eps) > 0 {
				o.cfg.Endpoints = eps
			}
		}
		if err := o.cfg.Validate(); err != nil {
			return err
		}
	}

	p, err := shell.Start(o.cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	if o.embedded {
		lg.Info("embedded etcd and proxy ready", zap.String("etcd", o.cfg.Endpoints[0]), zap.String("proxy", p.Addr()))
		fmt.Fprintf(os.Stderr, "etcd is serving on %s; the proxy is serving on %s (try: etcdctl --endpoints=%s put foo bar)\n",
			o.cfg.Endpoints[0], p.Addr(), p.Addr())
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sigc:
		lg.Info("received signal; shutting down", zap.String("signal", s.String()))
		return nil
	case err := <-p.Err():
		return fmt.Errorf("proxy stopped: %w", err)
	}
}

// startEmbedded starts the in-process etcd member for --embedded-etcd.
func (o *startOptions) startEmbedded(cmd *cobra.Command, lg *zap.Logger) (*embedetcd.Member, func(), error) {
	dir := o.cfg.DataDir
	temp := !cmd.Flags().Changed("data-dir")
	if temp {
		d, err := os.MkdirTemp("", "etcdproxy-embedded-")
		if err != nil {
			return nil, nil, err
		}
		dir = d
	}
	level := "warn"
	if o.cfg.Debug {
		level = "debug"
	}
	m, err := embedetcd.StartMember("embedded", dir+"/member", o.embeddedClientURL, o.embeddedPeerURL, embedetcd.Options{LogLevel: level})
	if err != nil {
		if temp {
			os.RemoveAll(dir)
		}
		if strings.Contains(err.Error(), "address already in use") {
			return nil, nil, fmt.Errorf("%w (is another etcd running? choose other ports with --embedded-client-url and --embedded-peer-url)", err)
		}
		return nil, nil, err
	}
	lg.Info("started embedded etcd", zap.String("client-url", m.ClientURL), zap.String("data-dir", m.Dir))
	return m, func() {
		m.Stop()
		if temp {
			os.RemoveAll(dir)
		}
	}, nil
}
