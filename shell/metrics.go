package shell

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdproxy/etcdproxy/core/watch"
)

// registerWatchMetrics exports the watch machine's state. The first two
// carry the names etcd's proxy uses for the same ideas.
func registerWatchMetrics(reg prometheus.Registerer, l *watchLoop) {
	stat := func(f func(watch.Stats, watch.Gauges) float64) func() float64 {
		return func() float64 { return f(l.snapshot()) }
	}
	gauge := func(name, help string, f func(watch.Stats, watch.Gauges) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, stat(f))
	}
	counter := func(name, help string, f func(watch.Stats, watch.Gauges) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, stat(f))
	}
	upstream := func(_ watch.Stats, g watch.Gauges) float64 { return float64(g.Groups + g.Own) }
	reg.MustRegister(
		gauge("etcd_grpc_proxy_watchers_coalescing_total", "Client watchers served without an upstream watcher of their own (client watchers minus upstream watchers).",
			func(s watch.Stats, g watch.Gauges) float64 { return float64(max(0, s.Watchers-g.Groups-g.Own)) }),
		counter("etcd_grpc_proxy_events_coalescing_total", "Events delivered to client watchers beyond the one copy received from etcd.",
			func(s watch.Stats, _ watch.Gauges) float64 { return float64(max(0, s.EventsSent-s.EventsReceived)) }),
		gauge("etcdproxy_watch_client_watchers", "Client watchers open.", func(s watch.Stats, _ watch.Gauges) float64 { return float64(s.Watchers) }),
		gauge("etcdproxy_watch_client_streams", "Client watch streams served by the watch machine.", func(_ watch.Stats, g watch.Gauges) float64 { return float64(g.Streams) }),
		gauge("etcdproxy_watch_upstream_watchers", "Upstream etcd watchers open (groups plus single-watcher catch-ups).", upstream),
		gauge("etcdproxy_watch_groups", "Key ranges with a shared upstream watcher.", func(_ watch.Stats, g watch.Gauges) float64 { return float64(g.Groups) }),
		gauge("etcdproxy_watch_own_upstream_watchers", "Upstream watchers serving a single client watcher that is catching up.", func(_ watch.Stats, g watch.Gauges) float64 { return float64(g.Own) }),
		gauge("etcdproxy_watch_history_window_events", "Events held in the groups' history windows.", func(_ watch.Stats, g watch.Gauges) float64 { return float64(g.WindowEvents) }),
		gauge("etcdproxy_watch_queued_bytes", "Bytes of watch responses queued for client streams and not yet written.", func(_ watch.Stats, g watch.Gauges) float64 { return float64(g.QueuedBytes) }),
		gauge("etcdproxy_watch_held_streams", "Client streams over their buffer bound now.", func(_ watch.Stats, g watch.Gauges) float64 { return float64(g.HeldStreams) }),
		counter("etcdproxy_watch_stream_holds_total", "Times a slow client stream went over its buffer bound and its watchers left the shared path.", func(s watch.Stats, _ watch.Gauges) float64 { return float64(s.Held) }),
		counter("etcdproxy_watch_merges_total", "Watchers moved from their own catch-up watcher into a group.", func(s watch.Stats, _ watch.Gauges) float64 { return float64(s.Merged) }),
		counter("etcdproxy_watch_compactions_total", "Client watchers ended by compaction.", func(s watch.Stats, _ watch.Gauges) float64 { return float64(s.Compacted) }),
		counter("etcdproxy_watch_events_received_total", "Events received from etcd.", func(s watch.Stats, _ watch.Gauges) float64 { return float64(s.EventsReceived) }),
		counter("etcdproxy_watch_events_sent_total", "Events handed to client watchers.", func(s watch.Stats, _ watch.Gauges) float64 { return float64(s.EventsSent) }),
		counter("etcdproxy_watch_upstream_watches_opened_total", "Upstream watchers opened (groups and catch-ups).", func(s watch.Stats, _ watch.Gauges) float64 { return float64(s.GroupsOpened + s.OwnOpened) }),
	)
}
