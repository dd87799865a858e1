// Package probe is how the benchmarks reach their targets: a gRPC
// connection to an etcd member or a proxy, and the waits until one serves.
package probe

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

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
