package shell

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// grpcMetrics are the gRPC server metrics etcd's proxy exports, by the
// same names, help and labels as go-grpc-middleware's Prometheus provider
// gives them (grpc_server_started_total, grpc_server_handled_total,
// grpc_server_msg_received_total, grpc_server_msg_sent_total and
// grpc_server_handling_seconds), counted the same way: dashboards built
// for either proxy read this one.
//
// The provider looks a method's counters up by label values on every
// message. At 10,000 watchers that lookup (hashing three strings) ran once
// per watcher per event and took 8% of the proxy's CPU; here each method's
// counters are looked up once, when the server's methods are registered
// (init), and a call or stream carries them.
type grpcMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
	seconds                          *prometheus.HistogramVec
	methods                          map[string]*methodMetrics // by full method name
}

type methodMetrics struct {
	started, received, sent prometheus.Counter
	handled                 map[codes.Code]prometheus.Counter // gRPC's own codes
	handledVec              *prometheus.CounterVec
	seconds                 prometheus.Observer
	labels                  [3]string // type, service, method
}

func newGRPCMetrics(buckets []float64) *grpcMetrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	return &grpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total", Help: "Total number of RPCs started on the server."}, labels),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total", Help: "Total number of RPCs completed on the server, regardless of success or failure."},
			append(labels, "grpc_code")),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_received_total", Help: "Total number of RPC stream messages received on the server."}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_msg_sent_total", Help: "Total number of gRPC stream messages sent by the server."}, labels),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: buckets}, labels),
		methods: map[string]*methodMetrics{},
	}
}

func (m *grpcMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range []prometheus.Collector{m.started, m.handled, m.received, m.sent, m.seconds} {
		c.Describe(ch)
	}
}

func (m *grpcMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range []prometheus.Collector{m.started, m.handled, m.received, m.sent, m.seconds} {
		c.Collect(ch)
	}
}

// init looks up the counters of every method s serves (so that each shows,
// at zero, before its first call). It runs before s serves; the map is
// only read after.
func (m *grpcMetrics) init(s *grpc.Server) {
	for service, info := range s.GetServiceInfo() {
		for _, mi := range info.Methods {
			m.methods["/"+service+"/"+mi.Name] = m.lookup(grpcType(mi.IsClientStream, mi.IsServerStream), service, mi.Name)
		}
	}
}

// grpcType is the grpc_type label of a method that streams from the
// client, the server, both or neither.
func grpcType(clientStream, serverStream bool) string {
	switch {
	case clientStream && serverStream:
		return "bidi_stream"
	case clientStream:
		return "client_stream"
	case serverStream:
		return "server_stream"
	}
	return "unary"
}

func (m *grpcMetrics) lookup(typ, service, method string) *methodMetrics {
	mm := &methodMetrics{
		started:    m.started.WithLabelValues(typ, service, method),
		received:   m.received.WithLabelValues(typ, service, method),
		sent:       m.sent.WithLabelValues(typ, service, method),
		seconds:    m.seconds.WithLabelValues(typ, service, method),
		handled:    map[codes.Code]prometheus.Counter{},
		handledVec: m.handled,
		labels:     [3]string{typ, service, method},
	}
	for c := range codes.Unauthenticated + 1 {
		mm.handled[c] = m.handled.WithLabelValues(typ, service, method, c.String())
	}
	return mm
}

// of returns the counters of fullMethod, of type typ.
func (m *grpcMetrics) of(fullMethod, typ string) *methodMetrics {
	if mm := m.methods[fullMethod]; mm != nil {
		return mm
	}
	service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return m.lookup(typ, service, method) // not registered: looked up per call
}

func (mm *methodMetrics) done(err error, began time.Time) {
	code := status.Code(err)
	if c := mm.handled[code]; c != nil {
		c.Inc()
	} else { // a code outside gRPC's own
		mm.handledVec.WithLabelValues(mm.labels[0], mm.labels[1], mm.labels[2], code.String()).Inc()
	}
	mm.seconds.Observe(time.Since(began).Seconds())
}

func (m *grpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	began := time.Now()
	mm := m.of(info.FullMethod, grpcType(false, false))
	mm.started.Inc()
	mm.received.Inc()
	resp, err := handler(ctx, req)
	mm.sent.Inc()
	mm.done(err, began)
	return resp, err
}

func (m *grpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	began := time.Now()
	mm := m.of(info.FullMethod, grpcType(info.IsClientStream, info.IsServerStream))
	mm.started.Inc()
	err := handler(srv, &countedStream{ServerStream: ss, m: mm})
	mm.done(err, began)
	return err
}

// countedStream counts every message sent and every receive, as the
// provider does (a receive that fails, the stream's end included, counts).
type countedStream struct {
	grpc.ServerStream
	m *methodMetrics
}

func (s *countedStream) SendMsg(v any) error {
	err := s.ServerStream.SendMsg(v)
	s.m.sent.Inc()
	return err
}

func (s *countedStream) RecvMsg(v any) error {
	err := s.ServerStream.RecvMsg(v)
	s.m.received.Inc()
	return err
}
