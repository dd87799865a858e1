package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
)

// target is where the clients send their reads: etcd itself (p nil) or a
// proxy in front of it.
type target struct {
	name, endpoint string
	p              *child.Proc
}

// startEtcd starts the etcd member on free 127.0.0.1 ports and waits until
// it is healthy.
func startEtcd(o options) (*child.Proc, string, error) {
	clientAddr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	peerAddr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	etcdURL, peerURL := "http://"+clientAddr, "http://"+peerAddr
	args := []string{"--name=cr", "--data-dir=" + filepath.Join(o.dir, "etcd-data"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=cr=" + peerURL}
	etcd, err := child.Start("etcd", o.etcdBin, append(args, strings.Fields(o.etcdFlags)...), logPath(o, "etcd"))
	if err != nil {
		return nil, "", err
	}
	if err := probe.AwaitHealthy(etcd, etcdURL, 30*time.Second); err != nil {
		etcd.Stop()
		return nil, "", err
	}
	return etcd, etcdURL, nil
}

// startProxy starts the proxy named name (etcdproxy or grpc-proxy) in front
// of etcd on a free 127.0.0.1 port and waits until it serves.
func startProxy(o options, name, etcdURL string) (*child.Proc, string, error) {
	var bin string
	var args []string
	switch name {
	case "grpc-proxy":
		bin, args = o.etcdBin, append([]string{"grpc-proxy", "start"}, strings.Fields(o.grpcproxyFlags)...)
	case "etcdproxy":
		bin, args = o.etcdproxyBin, append([]string{"start"}, strings.Fields(o.etcdproxyFlags)...)
	default:
		return nil, "", fmt.Errorf("no proxy for target %q", name)
	}
	addr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	args = append(args, "--endpoints="+etcdURL, "--listen-addr="+addr,
		"--advertise-client-url=", "--data-dir="+filepath.Join(o.dir, name+".data"))
	p, err := child.Start(name, bin, args, logPath(o, name))
	if err != nil {
		return nil, "", err
	}
	if err := probe.AwaitProxy(p, addr, 30*time.Second); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

// metrics is a scraped Prometheus exposition.
type metrics = probe.Metrics

// scrape reads url (a /metrics or /proxy/metrics page).
func scrape(url string) (metrics, error) {
	return probe.Scrape(context.Background(), &http.Client{Timeout: 10 * time.Second}, url)
}

// etcdRanges is etcd's count of Range calls handled.
func etcdRanges(m metrics) float64 {
	v, _ := m.Sum("grpc_server_handled_total", "grpc_method", "Range")
	return v
}
