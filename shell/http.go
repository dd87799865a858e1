package shell

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/debugutil"
	"go.etcd.io/etcd/server/v3/etcdserver/api/etcdhttp"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy"
	"go.uber.org/zap"
)

// httpHandler serves the HTTP paths etcd's proxy serves, with the same
// meaning: /metrics relays the etcd member's metrics, /proxy/metrics is the
// proxy's own, /health checks the cluster through the proxy's upstream
// connection and /proxy/health checks a read and a watch through the proxy
// itself. pprof is added on the client listener when enabled.
func (p *Proxy) httpHandler(withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", http.NotFound)
	mux.Handle(etcdhttp.PathMetrics, memberMetrics{endpoints: p.up.client.Endpoints, tls: p.up.tls})
	grpcproxy.HandleHealth(p.lg, mux, p.up.client)
	mux.Handle(etcdhttp.PathProxyMetrics, promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{}))
	grpcproxy.HandleProxyHealth(p.lg, mux, p.selfClient())
	if withPprof && p.cfg.EnablePprof {
		for path, h := range debugutil.PProfHandlers() {
			mux.Handle(path, h)
		}
		p.lg.Info("gRPC proxy enabled pprof", zap.String("path", debugutil.HTTPPrefixPProf))
	}
	return mux
}

// selfClient is a client of the proxy itself, for /proxy/health.
func (p *Proxy) selfClient() *clientv3.Client {
	if p.self != nil {
		return p.self
	}
	cfg := clientv3.Config{Endpoints: []string{p.Addr()}, DialTimeout: 5 * time.Second, Logger: p.lg.Named("self")}
	if p.tlsInfo != nil {
		tc, err := p.tlsInfo.ClientConfig()
		if err != nil {
			return nil
		}
		tc.InsecureSkipVerify = true // the proxy checks itself, not a stranger
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		p.lg.Warn("cannot create client for /proxy/health", zap.Error(err))
		return nil
	}
	p.self = c
	return c
}

// serveMetrics starts the extra --metrics-addr listener.
func (p *Proxy) serveMetrics(tlsInfo *transport.TLSInfo) error {
	u, err := url.Parse(p.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("invalid --metrics-addr %q: %w", p.cfg.MetricsAddr, err)
	}
	if u.Scheme != "https" {
		tlsInfo = nil
	}
	l, err := transport.NewListener(u.Host, u.Scheme, tlsInfo)
	if err != nil {
		return fmt.Errorf("--metrics-addr %s: %w", p.cfg.MetricsAddr, err)
	}
	p.metrics = &http.Server{Handler: p.httpHandler(false), ReadHeaderTimeout: 10 * time.Second}
	p.lg.Info("gRPC proxy listening for metrics", zap.String("address", u.String()))
	p.serve(func() error { return p.metrics.Serve(l) })
	return nil
}
