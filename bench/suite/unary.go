package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// The unary section: -unary-clients goroutines over -unary-conns gRPC
// connections call one RPC in a tight loop for -warmup (not measured) then
// -duration, on keys spread over 1,000 written beforehand, one RPC after
// another: Put of a 256-byte value, a linearizable Range of one key, and a
// Txn that compares the key's version and puts it (or reads it, if it did
// not exist). Per RPC: calls a second, p50 and p99 latency, and CPU per
// call of the target (etcd itself for direct) and of etcd.

const unaryKeys = 1000

var unaryClients, unaryConns int

func init() {
	register(&section{
		name:    "unary",
		ceiling: "forwarder",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&unaryClients, "unary-clients", 64, "unary: calling goroutines")
			fs.IntVar(&unaryConns, "unary-conns", 8, "unary: gRPC connections they share")
		},
		check: func(options) error {
			if unaryClients < 1 || unaryConns < 1 {
				return errors.New("-unary-clients and -unary-conns must be positive")
			}
			return nil
		},
		prepare: func(ctx context.Context, _ options, etcd *grpc.ClientConn) error {
			return writeUnaryKeys(ctx, pb.NewKVClient(etcd))
		},
		each: runUnary,
		about: func(options) string {
			return fmt.Sprintf("%d goroutines over %d connections call one RPC in a tight loop; the ceiling is a bare gRPC forwarder relaying request and response bytes undecoded", unaryClients, unaryConns)
		},
	})
}

type unaryOp struct {
	name string
	call func(ctx context.Context, kv pb.KVClient, key []byte) error
}

var unaryValue = make([]byte, 256)

var unaryOps = []unaryOp{
	{"Put", func(ctx context.Context, kv pb.KVClient, key []byte) error {
		_, err := kv.Put(ctx, &pb.PutRequest{Key: key, Value: unaryValue})
		return err
	}},
	{"Range", func(ctx context.Context, kv pb.KVClient, key []byte) error {
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: key})
		return err
	}},
	{"Txn", func(ctx context.Context, kv pb.KVClient, key []byte) error {
		_, err := kv.Txn(ctx, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: key, Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: unaryValue}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}}},
		})
		return err
	}},
}

func unaryKey(i int) []byte { return fmt.Appendf(nil, "suite/unary/%04d", i%unaryKeys) }

// writeUnaryKeys writes the keys the unary calls use, directly on etcd.
func writeUnaryKeys(ctx context.Context, etcd pb.KVClient) error {
	for i := range unaryKeys {
		if _, err := etcd.Put(ctx, &pb.PutRequest{Key: unaryKey(i), Value: unaryValue}); err != nil {
			return err
		}
	}
	return nil
}

// runUnary measures every unary RPC through one target.
func runUnary(ctx context.Context, o options, res *results, t target, etcd member) error {
	conns := make([]*grpc.ClientConn, unaryConns)
	for i := range conns {
		c, err := probe.Dial(t.endpoint)
		if err != nil {
			return err
		}
		defer c.Close()
		conns[i] = c
	}
	for _, op := range unaryOps {
		m, err := unaryLoad(ctx, o, conns, op, t, etcd)
		if err != nil {
			return fmt.Errorf("%s: %w", op.name, err)
		}
		child.Logf("unary %s through %s: %.0f calls/s, p50 %.2f ms, p99 %.2f ms, %d errors", op.name, t.name, m.perSec, ms(m.p50), ms(m.p99), m.errors)
		res.set("unary "+op.name, "calls/s", "%.0f", true, t.name, m.perSec)
		res.set("unary "+op.name, "p50 ms", "%.2f", false, t.name, ms(m.p50))
		res.set("unary "+op.name, "p99 ms", "%.2f", false, t.name, ms(m.p99))
		// For direct the target is etcd: both rows carry its CPU.
		res.set("unary "+op.name, "target CPU µs/call", "%.1f", false, t.name, m.targetCPU)
		res.set("unary "+op.name, "etcd CPU µs/call", "%.1f", false, t.name, m.etcdCPU)
		if m.errors > 0 {
			res.set("unary "+op.name, "errors", "%.0f", false, t.name, float64(m.errors))
		}
	}
	return nil
}

type unaryMeasure struct {
	perSec             float64
	p50, p99           time.Duration
	targetCPU, etcdCPU float64 // µs per call
	errors             int
}

func unaryLoad(ctx context.Context, o options, conns []*grpc.ClientConn, op unaryOp, t target, etcd member) (unaryMeasure, error) {
	var m unaryMeasure
	var (
		mu   sync.Mutex
		lats []time.Duration
		wg   sync.WaitGroup
	)
	start := time.Now()
	measureFrom := start.Add(o.warmup)
	end := measureFrom.Add(o.duration)
	for g := range unaryClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv := pb.NewKVClient(conns[g%len(conns)])
			var mine []time.Duration
			errs := 0
			for i := g; ; i += unaryClients {
				began := time.Now()
				if began.After(end) {
					break
				}
				err := op.call(ctx, kv, unaryKey(i))
				if began.After(measureFrom) {
					if err != nil {
						errs++
					} else {
						mine = append(mine, time.Since(began))
					}
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			m.errors += errs
			mu.Unlock()
		}()
	}
	time.Sleep(time.Until(measureFrom))
	cpu0, _ := child.CPUSeconds(t.cpuProc(etcd).PID())
	etcd0, _ := child.CPUSeconds(etcd.proc.PID())
	time.Sleep(time.Until(end))
	cpu1, _ := child.CPUSeconds(t.cpuProc(etcd).PID())
	etcd1, _ := child.CPUSeconds(etcd.proc.PID())
	wg.Wait()
	if len(lats) == 0 {
		return m, fmt.Errorf("no call succeeded in the measured window (%d errors)", m.errors)
	}
	slices.Sort(lats)
	n := float64(len(lats))
	m.perSec = n / o.duration.Seconds()
	m.p50, m.p99 = lats[len(lats)/2], lats[min(len(lats)-1, len(lats)*99/100)]
	m.targetCPU = (cpu1 - cpu0) * 1e6 / n
	m.etcdCPU = (etcd1 - etcd0) * 1e6 / n
	return m, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
