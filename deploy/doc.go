// Package deploy holds what operators load next to the proxy, and the
// test that keeps it true: grafana-dashboard.json (a Grafana dashboard:
// watch coalescing, upstream watchers, held streams and catch-ups, lease
// refreshes saved, cache hit ratio and invalidations, member in use and
// failovers, gRPC latency by method) and prometheus-alerts.yml (Prometheus
// alerting rules). deploy_test.go parses both and checks that every metric
// their expressions name is served on a live proxy's /proxy/metrics.
package deploy
