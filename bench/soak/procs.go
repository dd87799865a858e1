package main

// The processes: the etcd cluster (in this process), the proxy (a child),
// and what their metrics say.

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/bench/internal/targets"
	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
)

func startCluster(dir string) (*embedetcd.Cluster, error) {
	logf("starting a 3-member etcd cluster under %s", dir)
	return embedetcd.StartCluster(filepath.Join(dir, "etcd"), 3, embedetcd.Options{
		NoFsync:  true,
		LogLevel: "warn",
		Configure: func(c *embed.Config) {
			c.LogOutputs = []string{filepath.Join(dir, c.Name+".log")}
		},
	})
}

// proxy is the proxy under test, a child process.
type proxy struct {
	*child.Proc
	addr       string // host:port the clients use
	metricsURL string // its own metrics (/proxy/metrics on --metrics-addr)
}

func startProxy(o options, cl *embedetcd.Cluster) (*proxy, error) {
	maddr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, err
	}
	bins := targets.Bins{Etcdproxy: o.etcdproxyBin, Dir: o.dir}
	p, addr, err := bins.StartProxy("etcdproxy", strings.Join(cl.Endpoints(), ","),
		"--metrics-addr=http://"+maddr+" "+o.etcdproxyFlags)
	if err != nil {
		return nil, err
	}
	return &proxy{Proc: p, addr: addr, metricsURL: "http://" + maddr + "/proxy/metrics"}, nil
}

var hc = &http.Client{Timeout: 5 * time.Second}

func (p *proxy) metrics(ctx context.Context) (probe.Metrics, error) {
	return probe.Scrape(ctx, hc, p.metricsURL)
}

// memberInUse is the endpoint the proxy forwards to, by its gauge
// etcdproxy_upstream_member_in_use{member=...} == 1.
func memberInUse(m probe.Metrics) (string, error) {
	mf := m["etcdproxy_upstream_member_in_use"]
	for _, s := range mf.GetMetric() {
		if s.GetGauge().GetValue() != 1 {
			continue
		}
		for _, l := range s.GetLabel() {
			if l.GetName() == "member" {
				return l.GetValue(), nil
			}
		}
	}
	return "", fmt.Errorf("no etcdproxy_upstream_member_in_use{member=...} 1 in the proxy's metrics")
}

// memberIndex is the index of the member whose client URL is endpoint,
// with or without a scheme.
func memberIndex(cl *embedetcd.Cluster, endpoint string) int {
	hostport := func(s string) string {
		if _, rest, ok := strings.Cut(s, "://"); ok {
			return rest
		}
		return s
	}
	for i, m := range cl.Members {
		if hostport(m.ClientURL) == hostport(endpoint) {
			return i
		}
	}
	return -1
}

// etcdWatchers reads etcd_debugging_mvcc_watcher_total from the first
// member that answers. The members run in this process and share its
// Prometheus registry, so the gauge is the sum over all three.
func etcdWatchers(ctx context.Context, cl *embedetcd.Cluster) (float64, bool) {
	for _, m := range cl.Members {
		mfs, err := probe.Scrape(ctx, hc, m.ClientURL+"/metrics")
		if err != nil {
			continue
		}
		if v, ok := mfs.Sum("etcd_debugging_mvcc_watcher_total"); ok {
			return v, true
		}
	}
	return 0, false
}
