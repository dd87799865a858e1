package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// etcdMetrics are the figures read from etcd's /metrics.
type etcdMetrics struct {
	renewed   float64 // etcd_debugging_lease_renewed_total
	kaStarted float64 // grpc_server_started_total, LeaseKeepAlive
	kaHandled float64 // grpc_server_handled_total, LeaseKeepAlive
}

// kaOpen is the number of LeaseKeepAlive streams open on etcd.
func (m etcdMetrics) kaOpen() float64 { return m.kaStarted - m.kaHandled }

func scrape(clientURL string) (etcdMetrics, error) {
	var m etcdMetrics
	mfs, err := probe.Scrape(context.Background(), &http.Client{Timeout: 10 * time.Second}, clientURL+"/metrics")
	if err != nil {
		return m, err
	}
	var seen bool
	if m.renewed, seen = mfs.Sum("etcd_debugging_lease_renewed_total"); !seen {
		return m, fmt.Errorf("no etcd_debugging_lease_renewed_total in %s/metrics", clientURL)
	}
	m.kaStarted, _ = mfs.Sum("grpc_server_started_total", "grpc_method", "LeaseKeepAlive")
	m.kaHandled, _ = mfs.Sum("grpc_server_handled_total", "grpc_method", "LeaseKeepAlive")
	return m, nil
}
