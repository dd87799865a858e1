package shell

import "go.uber.org/zap"

// configFields describes the effective configuration for the one line the
// proxy logs at start: every setting an operator may want to check after
// swapping the binary in, by its flag's name.
func (c *Config) configFields() []zap.Field {
	return []zap.Field{
		zap.Strings("endpoints", c.Endpoints),
		zap.String("listen-addr", c.ListenAddr),
		zap.String("advertise-client-url", c.AdvertiseClientURL),
		zap.String("namespace", c.Namespace),
		zap.String("resolver-prefix", c.ResolverPrefix),
		zap.Int("resolver-ttl", c.ResolverTTL),
		zap.String("metrics-addr", c.MetricsAddr),
		zap.Duration("endpoints-auto-sync-interval", c.EndpointsAutoSyncInterval),
		zap.Duration("failover-timeout", c.failoverTimeout()),
		zap.Bool("etcd-tls", c.Cert != "" || c.CACert != "" || c.InsecureSkipTLSVerify),
		zap.Bool("insecure-skip-tls-verify", c.InsecureSkipTLSVerify),
		zap.Bool("client-tls", c.CertFile != "" || c.AutoTLS),
		zap.Bool("client-cert-auth", c.TrustedCAFile != ""),
		zap.Int("max-send-bytes", c.MaxSendBytes),
		zap.Int("max-recv-bytes", c.MaxRecvBytes),
		zap.Uint32("max-concurrent-streams", c.MaxConcurrentStreams),
		zap.Int("watch-history-events", c.WatchHistoryEvents),
		zap.Int("watch-stream-buffer-bytes", c.WatchStreamBufferBytes),
		zap.Int("watch-total-buffer-bytes", c.WatchTotalBufferBytes),
		zap.Duration("watch-progress-notify-interval", c.WatchProgressInterval),
		zap.Int("cache-bytes", c.CacheBytes),
		zap.Int("cache-max-entry-bytes", c.CacheMaxEntryBytes),
		zap.Bool("cache-consistent-reads", c.CacheConsistentReads),
		zap.Bool("experimental-serializable-ordering", c.SerializableOrdering),
		zap.String("experimental-leasing-prefix", c.LeasingPrefix),
		zap.Bool("experimental-enable-grpc-logging", c.GRPCLogging),
		zap.Bool("enable-pprof", c.EnablePprof),
		zap.Bool("debug", c.Debug),
	}
}
