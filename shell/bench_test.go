package shell_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// startReferenceProxy serves etcd's own grpc-proxy KV service
// (go.etcd.io/etcd/server/v3/proxy/grpcproxy) in-process, wired as
// `etcd grpc-proxy start` wires it, for side-by-side measurements.
func startReferenceProxy(tb testing.TB, endpoints []string) string {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints})
	if err != nil {
		tb.Fatal(err)
	}
	kvp, _ := grpcproxy.NewKvProxy(c)
	s := grpc.NewServer()
	pb.RegisterKVServer(s, kvp)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = s.Serve(l) }()
	tb.Cleanup(func() { s.Stop(); c.Close() })
	return l.Addr().String()
}

// BenchmarkUnary measures unary KV calls from 32 concurrent callers on one
// connection, directly on etcd, through this proxy and through etcd's
// grpc-proxy, against the same embedded etcd member in the same run.
//
//	go test ./shell -run '^$' -bench BenchmarkUnary -benchtime 3s -count 5
func BenchmarkUnary(b *testing.B) {
	m := testutil.StartMember(b)
	targets := []struct{ name, addr string }{
		{"direct", strings.TrimPrefix(m.ClientURL, "http://")},
		{"etcdproxy", testutil.StartProxyLogging(b, []string{m.ClientURL}, nil, zap.NewNop()).Addr()},
		{"grpcproxy", startReferenceProxy(b, []string{m.ClientURL})},
	}
	ops := []struct {
		name string
		do   func(context.Context, pb.KVClient, int) error
	}{
		{"Put", func(ctx context.Context, kv pb.KVClient, i int) error {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "bench/%d", i%1000), Value: make([]byte, 256)})
			return err
		}},
		{"Range", func(ctx context.Context, kv pb.KVClient, i int) error {
			_, err := kv.Range(ctx, &pb.RangeRequest{Key: fmt.Appendf(nil, "bench/%d", i%1000)})
			return err
		}},
		{"RangeSerializable", func(ctx context.Context, kv pb.KVClient, i int) error {
			_, err := kv.Range(ctx, &pb.RangeRequest{Key: fmt.Appendf(nil, "bench/%d", i%1000), Serializable: true})
			return err
		}},
	}
	for _, op := range ops {
		for _, tg := range targets {
			b.Run(op.name+"/"+tg.name, func(b *testing.B) {
				kv := pb.NewKVClient(testutil.Dial(b, tg.addr))
				ctx := context.Background()
				b.SetParallelism(16) // 16 x GOMAXPROCS(2) = 32 callers
				b.ResetTimer()
				b.RunParallel(func(pbb *testing.PB) {
					i := 0
					for pbb.Next() {
						if err := op.do(ctx, kv, i); err != nil {
							b.Error(err)
							return
						}
						i++
					}
				})
			})
		}
	}
}
