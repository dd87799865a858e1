package shell

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// metricsKV answers Put, fails Range, and echoes watch requests as empty
// responses until the client closes.
type metricsKV struct{ pb.UnimplementedKVServer }

func (metricsKV) Put(context.Context, *pb.PutRequest) (*pb.PutResponse, error) {
	return &pb.PutResponse{}, nil
}

func (metricsKV) Range(context.Context, *pb.RangeRequest) (*pb.RangeResponse, error) {
	return nil, rpctypes.ErrGRPCCompacted
}

type metricsWatch struct{ pb.UnimplementedWatchServer }

func (metricsWatch) Watch(s pb.Watch_WatchServer) error {
	for {
		if _, err := s.Recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := s.Send(&pb.WatchResponse{}); err != nil {
			return err
		}
		if err := s.Send(&pb.WatchResponse{}); err != nil {
			return err
		}
	}
}

// TestGRPCMetricsMatchTheProvider: for the same calls, the proxy's gRPC
// server metrics are exactly go-grpc-middleware's Prometheus provider's
// (names, help, labels, values; histogram counts), so that dashboards
// made for etcd's proxy read this one.
func TestGRPCMetricsMatchTheProvider(t *testing.T) {
	buckets := []float64{.0005, .001, 10}
	ours, theirs := newGRPCMetrics(buckets), grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(buckets)))
	s := grpc.NewServer(grpc.ChainUnaryInterceptor(ours.unary, theirs.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(ours.stream, theirs.StreamServerInterceptor()))
	pb.RegisterKVServer(s, metricsKV{})
	pb.RegisterWatchServer(s, metricsWatch{})
	ours.init(s)
	theirs.InitializeMetrics(s)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	defer s.Stop()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	kv := pb.NewKVClient(conn)
	for range 3 {
		if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("k")}); err == nil {
		t.Fatal("Range succeeded")
	}
	if _, err := kv.Txn(ctx, &pb.TxnRequest{}); err == nil {
		t.Fatal("Txn succeeded")
	}
	w, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.Send(&pb.WatchRequest{}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := w.Recv(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != io.EOF {
		t.Fatalf("watch ended with %v", err)
	}

	text := func(c prometheus.Collector) string {
		r := prometheus.NewPedanticRegistry()
		r.MustRegister(c)
		mfs, err := r.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			for _, m := range mf.Metric {
				if h := m.Histogram; h != nil { // times differ: compare counts only
					h.SampleSum = nil
					for _, bk := range h.Bucket {
						bk.CumulativeCount = h.SampleCount
					}
				}
			}
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				t.Fatal(err)
			}
		}
		return b.String()
	}
	got, want := text(ours), text(theirs)
	if got != want {
		t.Fatalf("metrics differ from the provider's:\n--- ours\n%s\n--- provider\n%s", got, want)
	}
	for _, line := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3`,
		`grpc_server_handled_total{grpc_code="OutOfRange",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1`,
		`grpc_server_msg_sent_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 4`,
		`grpc_server_msg_received_total{grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 3`,
	} {
		if !strings.Contains(got, line) {
			t.Errorf("no line %s in\n%s", line, got)
		}
	}
}
