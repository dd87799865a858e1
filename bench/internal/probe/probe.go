// Package probe is how the benchmarks reach their targets: a gRPC
// connection to an etcd member or a proxy, the waits until one serves, and
// the reading of their Prometheus metrics.
package probe

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/shell"
)

// Dial connects to an endpoint ("host:port" or an http(s) URL), plaintext,
// taking responses of any size.
func Dial(ep string) (*grpc.ClientConn, error) {
	ep = strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://")
	return grpc.NewClient("passthrough:///"+ep,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
}

// AwaitHealthy waits until etcd's /health at clientURL says so.
func AwaitHealthy(p *child.Proc, clientURL string, d time.Duration) error {
	deadline := time.Now().Add(d)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(clientURL + "/health")
		if err == nil {
			var b [256]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if strings.Contains(string(b[:n]), `"health":"true"`) {
				return nil
			}
		}
		if p.Exited() {
			return fmt.Errorf("%s exited; see %s", p.Name, p.Log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %v; see %s", p.Name, d, p.Log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// AwaitProxy waits until a proxy (this one or etcd's) has logged that it
// serves and a serializable Range through it succeeds.
func AwaitProxy(p *child.Proc, endpoint string, d time.Duration) error {
	conn, err := Dial(endpoint)
	if err != nil {
		return err
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	return p.AwaitReady(shell.ReadyMessage, d, func(ctx context.Context) error {
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready-probe"), Serializable: true})
		return err
	})
}

// Metrics is a Prometheus exposition, by metric name.
type Metrics map[string]*dto.MetricFamily

// Scrape reads a Prometheus text exposition (etcd's /metrics, a proxy's
// /proxy/metrics) with Prometheus's own parser.
func Scrape(ctx context.Context, hc *http.Client, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return mfs, nil
}

// Sum adds up the counters, gauges and untyped samples of metric name that
// carry every label of labels (name, value pairs), and reports whether
// the metric is there at all.
func (mfs Metrics) Sum(name string, labels ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
	var v float64
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
			}) {
				continue next
			}
		}
		v += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return v, true
}
