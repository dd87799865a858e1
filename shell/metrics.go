package shell

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdproxy/etcdproxy/core/failover"
)

// nodeCollector exports the core node's state. The loop computes it only
// when Prometheus scrapes, in one query for all the metrics. The first two
// carry the names etcd's proxy uses for the same ideas.
type nodeCollector struct {
	l         *loop
	metrics   []nodeMetric
	failovers *prometheus.Desc
	inUse     *prometheus.Desc
}

type nodeMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(snapshot) float64
}

func newNodeCollector(l *loop) *nodeCollector {
	c := &nodeCollector{l: l}
	gauge := func(name, help string, f func(snapshot) float64) {
		c.metrics = append(c.metrics, nodeMetric{prometheus.NewDesc(name, help, nil, nil), prometheus.GaugeValue, f})
	}
	counter := func(name, help string, f func(snapshot) float64) {
		c.metrics = append(c.metrics, nodeMetric{prometheus.NewDesc(name, help, nil, nil), prometheus.CounterValue, f})
	}
	gauge("etcd_grpc_proxy_watchers_coalescing_total", "Client watchers served without an upstream watcher of their own (client watchers minus upstream watchers).",
		func(s snapshot) float64 {
			return float64(max(0, s.Stats.Watch.Watchers-s.Gauges.Watch.Groups-s.Gauges.Watch.CatchUps))
		})
	counter("etcd_grpc_proxy_events_coalescing_total", "Events delivered to client watchers beyond the one copy received from etcd.",
		func(s snapshot) float64 {
			return float64(max(0, s.Stats.Watch.EventsSent-s.Stats.Watch.EventsReceived))
		})
	gauge("etcdproxy_watch_client_watchers", "Client watchers open.", func(s snapshot) float64 { return float64(s.Stats.Watch.Watchers) })
	gauge("etcdproxy_watch_client_streams", "Client watch streams served by the watch machine.", func(s snapshot) float64 { return float64(s.Gauges.Watch.Streams) })
	gauge("etcdproxy_watch_upstream_watchers", "Upstream etcd watchers open (groups plus single-watcher catch-ups).",
		func(s snapshot) float64 { return float64(s.Gauges.Watch.Groups + s.Gauges.Watch.CatchUps) })
	gauge("etcdproxy_watch_groups", "Key ranges with a shared upstream watcher.", func(s snapshot) float64 { return float64(s.Gauges.Watch.Groups) })
	gauge("etcdproxy_watch_catch_up_watchers", "Upstream watchers serving a single client watcher that is catching up.", func(s snapshot) float64 { return float64(s.Gauges.Watch.CatchUps) })
	gauge("etcdproxy_watch_history_window_events", "Events held in the groups' history windows.", func(s snapshot) float64 { return float64(s.Gauges.Watch.WindowEvents) })
	gauge("etcdproxy_client_queued_bytes", "Bytes of responses queued for client streams and not yet written.", func(s snapshot) float64 { return float64(s.Gauges.Flow.QueuedBytes) })
	gauge("etcdproxy_client_held_streams", "Client streams over their buffer bound now.", func(s snapshot) float64 { return float64(s.Gauges.Flow.HeldStreams) })
	gauge("etcdproxy_revision_fetches_pending", "Revision fetches (linearizable reads of the current revision) not answered yet.", func(s snapshot) float64 { return float64(s.Gauges.Flow.PendingFetches) })
	counter("etcdproxy_client_stream_holds_total", "Times a slow client stream went over its buffer bound and its watchers left the shared path.", func(s snapshot) float64 { return float64(s.Stats.Holds) })
	counter("etcdproxy_client_stream_total_holds_total", "Of those holds, the ones made because all client streams together were over --watch-total-buffer-bytes.", func(s snapshot) float64 { return float64(s.Stats.TotalHolds) })
	counter("etcdproxy_watch_merges_total", "Watchers moved from their catch-up watcher into their group.", func(s snapshot) float64 { return float64(s.Stats.Watch.Merged) })
	counter("etcdproxy_watch_rewinds_total", "Group upstream watchers reopened from an earlier revision for a watcher starting before the history window.", func(s snapshot) float64 { return float64(s.Stats.Watch.Rewinds) })
	counter("etcdproxy_watch_compactions_total", "Client watchers ended by compaction.", func(s snapshot) float64 { return float64(s.Stats.Watch.Compacted) })
	counter("etcdproxy_watch_events_received_total", "Events received from etcd.", func(s snapshot) float64 { return float64(s.Stats.Watch.EventsReceived) })
	counter("etcdproxy_watch_events_sent_total", "Events handed to client watchers.", func(s snapshot) float64 { return float64(s.Stats.Watch.EventsSent) })
	counter("etcdproxy_watch_upstream_watches_opened_total", "Upstream watchers opened (groups and catch-ups).",
		func(s snapshot) float64 { return float64(s.Stats.Watch.GroupsOpened + s.Stats.Watch.CatchUpsOpened) })
	gauge("etcdproxy_lease_tracked", "Leases the lease machine tracks (asked for by a client within their TTL).", func(s snapshot) float64 { return float64(s.Gauges.Lease.Leases) })
	gauge("etcdproxy_lease_client_streams", "Client LeaseKeepAlive streams served by the lease machine.", func(s snapshot) float64 { return float64(s.Gauges.Lease.Streams) })
	gauge("etcdproxy_lease_owed_answers", "Keep-alive answers owed to client streams over their buffer bound.", func(s snapshot) float64 { return float64(s.Gauges.Lease.Owed) })
	counter("etcdproxy_lease_keepalive_requests_total", "Client keep-alive requests taken by the lease machine.", func(s snapshot) float64 { return float64(s.Stats.Lease.Requests) })
	counter("etcdproxy_lease_keepalive_answers_total", "Client keep-alive requests answered.", func(s snapshot) float64 { return float64(s.Stats.Lease.Answered) })
	counter("etcdproxy_lease_keepalive_answered_locally_total", "Client keep-alive requests answered from a refresh etcd confirmed less than TTL/3 ago, without a request to etcd.",
		func(s snapshot) float64 { return float64(s.Stats.Lease.AnsweredLocal) })
	counter("etcdproxy_lease_upstream_refreshes_total", "Keep-alive requests sent to etcd.", func(s snapshot) float64 { return float64(s.Stats.Lease.Refreshes) })
	gauge("etcdproxy_lease_ownership_verdicts", "Under a namespace: leases whose ownership (the namespace's or another's) the lease machine remembers.",
		func(s snapshot) float64 { return float64(s.Gauges.Lease.Verdicts) })
	counter("etcdproxy_lease_ownership_checks_total", "Under a namespace: lease ownership checks (one LeaseTimeToLive each) the lease machine asked for.",
		func(s snapshot) float64 { return float64(s.Stats.Lease.Checks) })
	counter("etcdproxy_lease_upstream_refreshes_piggybacked_total", "Of the keep-alive requests sent to etcd, those sent along with another lease's refresh because the lease had fallen due and a client asked for it within a third of its TTL.",
		func(s snapshot) float64 { return float64(s.Stats.Lease.Piggybacked) })
	counter("etcd_grpc_proxy_cache_hits_total", "Range calls answered from the read cache.", func(s snapshot) float64 { return float64(s.Stats.Cache.Hits) })
	counter("etcd_grpc_proxy_cache_misses_total", "Cacheable Range calls the read cache could not answer (forwarded to etcd).", func(s snapshot) float64 { return float64(s.Stats.Cache.Misses) })
	gauge("etcd_grpc_proxy_cache_keys_total", "Responses the read cache keeps.", func(s snapshot) float64 { return float64(s.Stats.Cache.Entries) })
	gauge("etcdproxy_cache_bytes", "Memory the read cache's responses hold: their encoded bytes plus what decoding and indexing them costs.", func(s snapshot) float64 { return float64(s.Stats.Cache.Bytes) })
	gauge("etcdproxy_cache_live", "1 while the read cache serves: its watch subscription is live and caught up.", func(s snapshot) float64 {
		if s.Stats.Cache.Live {
			return 1
		}
		return 0
	})
	counter("etcdproxy_cache_consistent_hits_total", "Linearizable Range calls answered from the read cache after etcd's revision was confirmed and delivered.", func(s snapshot) float64 { return float64(s.Stats.Cache.ConsistentHits) })
	counter("etcdproxy_cache_consistent_timeouts_total", "Linearizable Range calls forwarded because etcd's revision was not confirmed and delivered in time.", func(s snapshot) float64 { return float64(s.Stats.Cache.ConsistentTimeouts) })
	counter("etcdproxy_cache_revision_fetches_total", "Revision fetches made for linearizable reads (one for every read that arrived while the previous one was in flight).", func(s snapshot) float64 { return float64(s.Stats.Cache.Fetches) })
	counter("etcdproxy_cache_pauses_total", "Times the read cache closed its watch on the keyspace because it cost etcd more than 4 events per read it answered (at least 1,000 events in a second); it forwards every read for a pause, then subscribes again.", func(s snapshot) float64 { return float64(s.Stats.CachePauses) })
	counter("etcdproxy_cache_fills_total", "etcd responses kept by the read cache.", func(s snapshot) float64 { return float64(s.Stats.Cache.Fills) })
	counter("etcdproxy_cache_fills_refused_total", "etcd responses not kept: too large, older than what the subscription delivered, or the cache not live.", func(s snapshot) float64 { return float64(s.Stats.Cache.Refused) })
	counter("etcdproxy_cache_invalidations_total", "Cached responses dropped because an event touched their range.", func(s snapshot) float64 { return float64(s.Stats.Cache.Invalidations) })
	counter("etcdproxy_cache_evictions_total", "Cached responses dropped for room (least recently used).", func(s snapshot) float64 { return float64(s.Stats.Cache.Evictions) })
	gauge("etcdproxy_upstream_members", "etcd members the proxy knows (configured or found by auto-sync).", func(s snapshot) float64 { return float64(s.Stats.Failover.Members) })
	gauge("etcdproxy_upstream_members_healthy", "etcd members whose last health probe was answered in time, with a leader, and not behind the cluster.",
		func(s snapshot) float64 { return float64(s.Stats.Failover.Healthy) })
	gauge("etcdproxy_upstream_member_in_use_failed", "1 while the etcd member in use has failed (silent, unreachable, no leader or behind) and no other member is healthy to move to.",
		func(s snapshot) float64 {
			if s.Stats.Failover.Stuck != "" {
				return 1
			}
			return 0
		})
	c.failovers = prometheus.NewDesc("etcdproxy_upstream_failovers_total", "Switches of the etcd member in use, by reason (silent, unreachable, no leader, behind, removed).", []string{"reason"}, nil)
	c.inUse = prometheus.NewDesc("etcdproxy_upstream_member_in_use", "The etcd member the proxy forwards to (1 for the member in use).", []string{"member"}, nil)
	return c
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	ch <- c.failovers
	ch <- c.inUse
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.snapshot()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s))
	}
	for _, r := range failover.Reasons {
		if r != failover.ReasonStart {
			ch <- prometheus.MustNewConstMetric(c.failovers, prometheus.CounterValue, float64(s.Stats.Failover.Switches[r]), r)
		}
	}
	if m := s.Stats.Failover.Member; m != "" {
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, 1, m)
	}
}
