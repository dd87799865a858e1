package main

import (
	"context"
	"net/http"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// target is where the clients send their reads: etcd itself (p nil) or a
// proxy in front of it.
type target struct {
	name, endpoint string
	p              *child.Proc
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
