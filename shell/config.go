package shell

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/zap"

	"github.com/etcdproxy/etcdproxy/core/failover"
)

// Config is everything the proxy needs to start. Field names follow the
// flags of `etcd grpc-proxy start`; DefaultConfig gives their defaults.
type Config struct {
	// ListenAddr is the host:port clients connect to (gRPC and HTTP share it).
	ListenAddr string
	// Endpoints are the etcd members to forward to.
	Endpoints []string
	// EndpointsAutoSyncInterval, when positive, refreshes Endpoints from the
	// cluster's member list at that interval.
	EndpointsAutoSyncInterval time.Duration
	// AdvertiseClientURL is the address clients are told to use for this
	// proxy (MemberList, registration).
	AdvertiseClientURL string
	// ResolverPrefix and ResolverTTL register this proxy under a key prefix
	// in etcd so that MemberList through any proxy lists every proxy.
	ResolverPrefix string
	ResolverTTL    int
	// Namespace prefixes every key clients send and strips it from replies.
	Namespace string
	// MetricsAddr, when set, is a URL for an extra /metrics and /health
	// listener.
	MetricsAddr string
	// DataDir holds generated TLS certificates (--auto-tls).
	DataDir string
	// EnablePprof serves /debug/pprof on the client listener.
	EnablePprof bool
	// Debug turns on debug-level logging.
	Debug bool
	// GRPCLogging logs every client request and response at info
	// (--experimental-enable-grpc-logging).
	GRPCLogging bool
	// LeasingPrefix, when set, serves KV through clientv3's leasing KV
	// with its metadata under this prefix (--experimental-leasing-prefix).
	LeasingPrefix string
	// MaxWatchesPerStream bounds the watches one client watch stream may
	// hold; MaxStreamsPerConnection, the streams one client connection may
	// have open. 0: no bound.
	MaxWatchesPerStream     int
	MaxStreamsPerConnection int

	// MaxSendBytes is the largest request the proxy forwards to etcd; the
	// proxy's own server accepts requests up to MaxSendBytes plus gRPC's
	// framing allowance, as etcd's server does with its --max-request-bytes.
	MaxSendBytes int
	// MaxRecvBytes is the largest response the proxy accepts from etcd.
	MaxRecvBytes int
	// MaxConcurrentStreams bounds concurrent streams per client connection.
	MaxConcurrentStreams uint32

	// Server-side keepalive towards clients.
	GRPCKeepAliveMinTime  time.Duration
	GRPCKeepAliveInterval time.Duration
	GRPCKeepAliveTimeout  time.Duration
	// Client-side keepalive towards etcd.
	DialKeepAliveTime    time.Duration
	DialKeepAliveTimeout time.Duration
	PermitWithoutStream  bool

	// TLS towards etcd.
	Cert, Key, CACert     string
	InsecureSkipTLSVerify bool

	// TLS towards clients.
	CertFile, KeyFile, TrustedCAFile string
	ClientCRLFile                    string
	AutoTLS                          bool
	SelfSignedCertValidity           uint
	ListenCipherSuites               []string
	TLSMinVersion, TLSMaxVersion     string

	// WatchHistoryEvents bounds each watch group's history window, in
	// events: a watcher starting within it joins the group.
	WatchHistoryEvents int
	// WatchStreamBufferBytes bounds the bytes queued for one client watch
	// stream; beyond it the stream's watchers pause and catch up later.
	WatchStreamBufferBytes int
	// WatchTotalBufferBytes bounds the bytes queued for all client streams
	// together (see port.Config.TotalBufferBytes).
	WatchTotalBufferBytes int
	// WatchProgressInterval, when positive, is the proxy's own interval of
	// progress notifications to idle watchers that asked for them. Zero
	// (the default) passes on etcd's, at the cadence of the cluster's
	// --watch-progress-notify-interval.
	WatchProgressInterval time.Duration

	// CacheBytes caps the read cache, in encoded response bytes (0: no
	// cache). CacheMaxEntryBytes is the largest response kept (0: a
	// sixteenth of CacheBytes).
	CacheBytes         int
	CacheMaxEntryBytes int
	// CacheConsistentReads lets linearizable reads be answered from the
	// cache once etcd's current revision is confirmed and delivered.
	CacheConsistentReads bool
	// CacheIdleAfter: with no read for this long the cache drops its
	// entries and closes its watch (0: 5 minutes). Not a flag: tests that
	// count what the proxy holds after its clients leave shorten it.
	CacheIdleAfter time.Duration
	// SerializableOrdering shares one revision floor between every client
	// connection instead of one per connection: no client sees a
	// serializable read older than any KV answer the proxy gave.
	SerializableOrdering bool

	// FailoverTimeout is the proxy's own detection bound for the member in
	// use: a health probe unanswered this long, no raft leader for this
	// long, or this far behind the most advanced member, and the proxy
	// moves to a healthy member. Probes go to every member four times per
	// bound. Zero means failover.DefaultTimeout.
	FailoverTimeout time.Duration

	// Clock is the time source of the core and its loop (ticks, fetch
	// timeouts, reconnect backoff); nil means the wall clock.
	Clock clock.Clock

	// Logger receives the proxy's logs; nil means no logging.
	Logger *zap.Logger
}

// grpcOverheadBytes is the allowance for gRPC framing that etcd adds to its
// request size limit; the proxy's server uses the same figure so that a
// request too large for etcd is refused here with the error etcd would give.
const grpcOverheadBytes = 512 * 1024

// DefaultCacheBytes is the read cache's default cap: 64 MiB.
const DefaultCacheBytes = 64 << 20

// DefaultConfig returns the defaults of `etcd grpc-proxy start`.
func DefaultConfig() Config {
	return Config{
		ListenAddr:              "127.0.0.1:23790",
		Endpoints:               []string{"127.0.0.1:2379"},
		AdvertiseClientURL:      "127.0.0.1:23790",
		DataDir:                 "default.proxy",
		MaxSendBytes:            1.5 * 1024 * 1024,
		MaxRecvBytes:            math.MaxInt32,
		MaxConcurrentStreams:    math.MaxUint32,
		GRPCKeepAliveMinTime:    5 * time.Second,
		GRPCKeepAliveInterval:   2 * time.Hour,
		GRPCKeepAliveTimeout:    20 * time.Second,
		DialKeepAliveTimeout:    20 * time.Second,
		SelfSignedCertValidity:  1,
		TLSMinVersion:           "TLS1.2",
		WatchHistoryEvents:      4096,
		CacheBytes:              DefaultCacheBytes,
		CacheConsistentReads:    true,
		WatchStreamBufferBytes:  256 << 10,
		WatchTotalBufferBytes:   256 << 20,
		FailoverTimeout:         failover.DefaultTimeout,
		MaxWatchesPerStream:     DefaultMaxWatchesPerStream,
		MaxStreamsPerConnection: DefaultMaxStreamsPerConnection,
	}
}

// Default bounds per client: far above what etcd's clients open (clientv3
// puts the watches of one context on one stream; Kubernetes' API server
// holds a few thousand watches at most), far below what would hurt.
const (
	DefaultMaxWatchesPerStream     = 10000
	DefaultMaxStreamsPerConnection = 1000
)

// Validate reports the first setting that cannot work, naming it.
func (c *Config) Validate() error {
	if c.ListenAddr == "" {
		return errors.New("--listen-addr must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return fmt.Errorf("invalid --listen-addr %q: %w", c.ListenAddr, err)
	}
	if c.FailoverTimeout != 0 && c.FailoverTimeout < 100*time.Millisecond {
		return fmt.Errorf("invalid --failover-timeout %v: must be at least 100ms", c.FailoverTimeout)
	}
	if len(c.Endpoints) == 0 {
		return errors.New("--endpoints must name at least one etcd member")
	}
	for _, ep := range c.Endpoints {
		if err := validateEndpoint(ep); err != nil {
			return fmt.Errorf("invalid --endpoints entry %q: %w", ep, err)
		}
	}
	if c.MaxWatchesPerStream < 0 {
		return fmt.Errorf("invalid --max-watches-per-stream %d: must be 0 (no limit) or more", c.MaxWatchesPerStream)
	}
	if c.MaxStreamsPerConnection < 0 {
		return fmt.Errorf("invalid --max-streams-per-connection %d: must be 0 (no limit) or more", c.MaxStreamsPerConnection)
	}
	if c.ResolverPrefix != "" && c.ResolverTTL < 1 {
		return fmt.Errorf("invalid --resolver-ttl %d: must be at least 1 when --resolver-prefix is set", c.ResolverTTL)
	}
	if c.ResolverPrefix == "" && c.ResolverTTL > 0 {
		return fmt.Errorf("invalid --resolver-prefix %q: must be set when --resolver-ttl is", c.ResolverPrefix)
	}
	if c.ResolverPrefix != "" && c.AdvertiseClientURL == "" {
		return fmt.Errorf("invalid --advertise-client-url %q: required with --resolver-prefix", c.AdvertiseClientURL)
	}
	if c.MetricsAddr != "" {
		u, err := url.Parse(c.MetricsAddr)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("invalid --metrics-addr %q: want a URL like http://127.0.0.1:6633", c.MetricsAddr)
		}
	}
	if c.AutoTLS && c.SelfSignedCertValidity == 0 {
		return errors.New("invalid --self-signed-cert-validity 0: must be at least 1 year")
	}
	if c.MaxSendBytes <= 0 {
		return fmt.Errorf("invalid --max-send-bytes %d: must be positive", c.MaxSendBytes)
	}
	if c.CacheBytes < 0 {
		return fmt.Errorf("invalid --cache-bytes %d: must not be negative", c.CacheBytes)
	}
	if c.CacheMaxEntryBytes < 0 {
		return fmt.Errorf("invalid --cache-max-entry-bytes %d: must not be negative", c.CacheMaxEntryBytes)
	}
	if c.WatchHistoryEvents <= 0 {
		return fmt.Errorf("invalid --watch-history-events %d: must be positive", c.WatchHistoryEvents)
	}
	if c.WatchStreamBufferBytes <= 0 {
		return fmt.Errorf("invalid --watch-stream-buffer-bytes %d: must be positive", c.WatchStreamBufferBytes)
	}
	if c.WatchTotalBufferBytes <= 0 {
		return fmt.Errorf("invalid --watch-total-buffer-bytes %d: must be positive", c.WatchTotalBufferBytes)
	}
	if c.WatchProgressInterval < 0 {
		return fmt.Errorf("invalid --watch-progress-notify-interval %v: must not be negative", c.WatchProgressInterval)
	}
	if c.MaxRecvBytes <= 0 {
		return fmt.Errorf("invalid --max-recv-bytes %d: must be positive", c.MaxRecvBytes)
	}
	if c.MaxRecvBytes < c.MaxSendBytes {
		// etcd's proxy refuses this too (clientv3: the receive limit must
		// not be below the send limit).
		return fmt.Errorf("invalid --max-recv-bytes %d: must not be smaller than --max-send-bytes %d", c.MaxRecvBytes, c.MaxSendBytes)
	}
	return validateListenTLS(c)
}

// validateEndpoint refuses, with a clear error, an endpoint clientv3 would
// take but could never dial. The endpoint itself goes to clientv3
// unchanged; this is only a check, in clientv3's own terms: unix:path,
// unix://localhost:name and unix:///abs/path sockets (unixs for TLS), an
// http(s) URL with a host and port, or host:port.
func validateEndpoint(ep string) error {
	if ep == "" {
		return errors.New("empty endpoint")
	}
	if rest, ok := cutUnixScheme(ep); ok {
		if strings.Trim(rest, "/") == "" {
			return errors.New("missing socket path")
		}
		return nil
	}
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return err
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("unsupported scheme %q (want http, https, unix or unixs)", u.Scheme)
		}
		if u.Host == "" {
			return errors.New("missing host")
		}
		_, _, err = net.SplitHostPort(u.Host)
		return err
	}
	_, _, err := net.SplitHostPort(ep)
	return err
}

// cutUnixScheme returns what follows the scheme of a unix socket endpoint
// ("unix:", "unixs:", with or without "//").
func cutUnixScheme(ep string) (string, bool) {
	for _, scheme := range []string{"unix:", "unixs:"} {
		if rest, ok := strings.CutPrefix(ep, scheme); ok {
			return rest, true
		}
	}
	return "", false
}

func (c *Config) logger() *zap.Logger {
	if c.Logger == nil {
		return zap.NewNop()
	}
	return c.Logger
}

func (c *Config) failoverTimeout() time.Duration {
	if c.FailoverTimeout == 0 {
		return failover.DefaultTimeout
	}
	return c.FailoverTimeout
}
