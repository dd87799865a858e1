package main

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/internal/rawcodec"
)

// An attack runs hostile clients against endpoint until ctx ends; ready is
// closed once the attack is in full swing (for most at once; for the
// 100k-watches attack once every create is answered). It returns what the
// hostile clients got.
type attack func(ctx context.Context, o options, endpoint string, etcdKV pb.KVClient, ready chan<- struct{}) string

type phase struct {
	name string
	run  attack // nil: nothing hostile
}

var phases = []phase{
	{"quiet", nil},
	{"100k-watches", manyWatches},
	{"never-reads", neverReads},
	{"churn", churn},
	{"oversized-malformed", oversized},
	{"after", nil},
}

func createReq(key string) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}
}

// manyWatches creates o.watches watches on distinct keys on one stream as
// fast as the stream takes them, and counts the answers.
func manyWatches(ctx context.Context, o options, endpoint string, _ pb.KVClient, ready chan<- struct{}) string {
	conn, err := probe.Dial(endpoint)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	st, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		return "open: " + err.Error()
	}
	go func() {
		for i := 0; i < o.watches; i++ {
			if st.Send(createReq(fmt.Sprintf("hostile/w/%06d", i))) != nil {
				return
			}
		}
	}()
	created, refused, answered := 0, 0, 0
	reasons := map[string]int{}
	var streamErr error
	for answered < o.watches {
		r, err := st.Recv()
		if err != nil {
			streamErr = err
			break
		}
		if !r.Created {
			continue
		}
		answered++
		if r.Canceled {
			refused++
			reasons[r.CancelReason]++
		} else {
			created++
		}
	}
	close(ready)
	<-ctx.Done()
	out := fmt.Sprintf("%d created, %d refused", created, refused)
	for reason, n := range reasons {
		out += fmt.Sprintf(" (%d: %q)", n, reason)
	}
	if streamErr != nil && ctx.Err() == nil {
		out += "; stream ended: " + status.Convert(streamErr).Message()
	}
	return out
}

// neverReads opens o.stalled watch streams on a busy key that never read,
// and writes the key directly on etcd as fast as four writers can.
func neverReads(ctx context.Context, o options, endpoint string, etcdKV pb.KVClient, ready chan<- struct{}) string {
	conn, err := probe.Dial(endpoint)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	opened := 0
	for range o.stalled {
		st, err := pb.NewWatchClient(conn).Watch(ctx)
		if err != nil || st.Send(createReq("hostile/busy")) != nil {
			continue
		}
		opened++ // and never read
	}
	var puts atomic.Int64
	value := bytes.Repeat([]byte("x"), o.busyBytes)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := etcdKV.Put(ctx, &pb.PutRequest{Key: []byte("hostile/busy"), Value: value}); err == nil {
					puts.Add(1)
				}
			}
		}()
	}
	close(ready)
	wg.Wait()
	return fmt.Sprintf("%d streams never read; %d writes of %d bytes (%.1f MiB) to their key", opened, puts.Load(), o.busyBytes, float64(puts.Load())*float64(o.busyBytes)/(1<<20))
}

// churn opens and drops watch streams and keep-alive streams in a loop.
func churn(ctx context.Context, o options, endpoint string, _ pb.KVClient, ready chan<- struct{}) string {
	conn, err := probe.Dial(endpoint)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	grant, err := pb.NewLeaseClient(conn).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 600})
	if err != nil {
		return "lease grant: " + err.Error()
	}
	var watchLoops, kaLoops, failed atomic.Int64
	loop := func(once func(ctx context.Context) error, n *atomic.Int64) {
		for ctx.Err() == nil {
			sctx, cancel := context.WithCancel(ctx)
			err := once(sctx)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					failed.Add(1)
				}
				continue
			}
			n.Add(1)
		}
	}
	watchOnce := func(ctx context.Context) error {
		st, err := pb.NewWatchClient(conn).Watch(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(createReq("hostile/churn")); err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	kaOnce := func(ctx context.Context) error {
		st, err := pb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: grant.ID}); err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	var wg sync.WaitGroup
	for range o.churners {
		wg.Add(2)
		go func() { defer wg.Done(); loop(watchOnce, &watchLoops) }()
		go func() { defer wg.Done(); loop(kaOnce, &kaLoops) }()
	}
	close(ready)
	wg.Wait()
	return fmt.Sprintf("%d watch streams and %d keep-alive streams opened and dropped; %d failed", watchLoops.Load(), kaLoops.Load(), failed.Load())
}

// oversized sends Puts above etcd's request limit and malformed protobuf
// in a loop, and counts the answers by code.
func oversized(ctx context.Context, o options, endpoint string, _ pb.KVClient, ready chan<- struct{}) string {
	conn, err := probe.Dial(endpoint)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	var mu sync.Mutex
	codes := map[string]int{}
	note := func(what string, err error) {
		mu.Lock()
		codes[what+" "+status.Code(err).String()]++
		mu.Unlock()
	}
	big := bytes.Repeat([]byte("x"), 2<<20)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		kv := pb.NewKVClient(conn)
		for ctx.Err() == nil {
			_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("hostile/big"), Value: big})
			if ctx.Err() == nil {
				note("2 MiB Put:", err)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			in, out := []byte{0xff, 0xff, 0xff, 0x0f, 0x0a}, []byte(nil)
			err := conn.Invoke(ctx, "/etcdserverpb.KV/Range", &in, &out, grpc.ForceCodec(rawcodec.Codec{}))
			if ctx.Err() == nil {
				note("malformed Range:", err)
			}
		}
	}()
	close(ready)
	wg.Wait()
	var parts []string
	for k, n := range codes {
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// runAttack runs a phase's attack for o.phase once it is ready (at most
// 4 × o.phase in all), calls measure while it is still running, then ends
// it and returns its outcome.
func runAttack(ctx context.Context, o options, a attack, endpoint string, etcdKV pb.KVClient, measure func()) string {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	out := make(chan string, 1)
	go func() { out <- a(actx, o, endpoint, etcdKV, ready) }()
	limit := time.After(4 * o.phase)
	select {
	case <-ready:
		select {
		case <-time.After(o.phase):
		case <-limit:
		}
	case <-limit:
	}
	measure()
	cancel()
	select {
	case s := <-out:
		return s
	case <-time.After(30 * time.Second):
		return "(did not end within 30 s of being stopped)"
	}
}
