package shell_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// TestSlowClientHurtsNobody: a client that stops reading neither delays nor
// loses events for another client on the same key. The writes go one at a
// time, each only once the well-behaved client has its event, and each must
// reach it within 5 s while the slow client's stream is held (the proxy
// must never wait on the slow one); its put-to-event latencies are logged
// (the figures to compare live in EVAL.md's benchmarks). The proxy holds
// back at most its buffer bound for the slow client, and once it reads
// again it gets every event in order, with no gap, from the history window
// or a catch-up watch.
func TestSlowClientHurtsNobody(t *testing.T) {
	m := testutil.StartMember(t)
	obs, logs := observer.New(zap.InfoLevel)
	lg := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), obs)).Named("proxy")
	started := time.Now()
	p := testutil.StartProxyLogging(t, []string{m.ClientURL}, func(c *shell.Config) {
		c.WatchStreamBufferBytes = 64 << 10
		c.WatchHistoryEvents = 100
	}, lg)
	ctx := testutil.Context(t, 2*time.Minute)
	const n = 400
	value := strings.Repeat("v", 1024)

	// The slow client: small flow-control windows and no reads for now.
	slow := openSlowWatch(t, ctx, p.Addr(), "k")

	fast := openWatchLog(t, ctx, testutil.Dial(t, p.Addr()))
	fast.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k")})

	kv := pb.NewKVClient(testutil.Dial(t, m.ClientURL))
	var revs []int64
	var latencies, whileHeld []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		r, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte(value)})
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fast.waitFor(t, ectx, map[int64]int64{0: r.Header.Revision})
		cancel()
		latencies = append(latencies, time.Since(start))
		if _, g := p.CoreState(); g.Flow.HeldStreams > 0 {
			whileHeld = append(whileHeld, time.Since(start))
		}
	}
	if got := len(fast.byID[0]) - 1; got != n {
		t.Errorf("fast client got %d events, want %d", got, n)
	}
	if len(whileHeld) < n/4 {
		t.Errorf("the slow stream was held for only %d of %d writes", len(whileHeld), n)
	}
	t.Logf("fast client, put to event: all %d writes p50 %v p99 %v; the %d while the slow stream was held p50 %v p99 %v",
		len(latencies), percentile(latencies, 50), percentile(latencies, 99), len(whileHeld), percentile(whileHeld, 50), percentile(whileHeld, 99))

	stats, gauges := p.CoreState()
	t.Logf("while the slow client does not read: holds %d, held streams %d, queued %d bytes, catch-ups %d",
		stats.Holds, gauges.Flow.HeldStreams, gauges.Flow.QueuedBytes, gauges.Watch.CatchUps)
	if stats.Holds == 0 {
		t.Errorf("the slow stream was never held back")
	}
	if limit := 64<<10 + 64<<10; gauges.Flow.QueuedBytes > limit {
		t.Errorf("%d bytes queued for the slow client, more than its bound allows (%d)", gauges.Flow.QueuedBytes, limit)
	}
	// The operator is told, once per 30 s at most.
	held := func() int { return logs.FilterMessageSnippet("held for reading too slowly").Len() }
	testutil.WaitUntil(t, 5*time.Second, "a log line about the held stream", func() bool { return held() > 0 })
	if n, most := held(), 1+int(time.Since(started)/(30*time.Second)); n > most {
		t.Errorf("%d lines about held streams in %v, want at most %d", n, time.Since(started), most)
	}

	// Now it reads: every event, in order, once.
	var got []int64
	for len(got) < n {
		r, err := slow.Recv()
		if err != nil {
			t.Fatalf("slow client after %d events: %v", len(got), err)
		}
		if r.Canceled {
			t.Fatalf("slow client cancelled: %v", r)
		}
		for _, ev := range r.Events {
			got = append(got, ev.Kv.ModRevision)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(revs) {
		t.Fatalf("slow client got %d events %v..., want %d", len(got), got[:min(10, len(got))], len(revs))
	}
	s2, _ := p.CoreState()
	t.Logf("after catching up: catch-up watches opened %d, merged back %d", s2.Watch.CatchUpsOpened, s2.Watch.Merged)
}

// openSlowWatch opens a watch on key through a connection with small
// flow-control windows, so that a client that stops reading soon makes the
// proxy's sends block, and returns the stream once the watch is created.
func openSlowWatch(t *testing.T, ctx context.Context, addr, key string) pb.Watch_WatchClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(key)}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || !r.Created {
		t.Fatalf("slow client's created: %v %v", r, err)
	}
	return st
}

// percentile returns the p-th percentile of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// TestStalledStreamsHeldToTheTotalBound: eight clients that stop reading
// hold, between them, no more than --watch-total-buffer-bytes plus 64 KiB
// each (and one response), although each one's own bound is far higher;
// a client on the same key that keeps reading is never held and gets every
// event; and each stalled client, once it reads, gets every event in
// order.
func TestStalledStreamsHeldToTheTotalBound(t *testing.T) {
	m := testutil.StartMember(t)
	const total, perStream, stalled, writes = 512 << 10, 4 << 20, 8, 60
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) {
		c.WatchStreamBufferBytes = perStream
		c.WatchTotalBufferBytes = total
		c.WatchHistoryEvents = 100
	})
	ctx := testutil.Context(t, 2*time.Minute)
	var slow []pb.Watch_WatchClient
	for range stalled {
		slow = append(slow, openSlowWatch(t, ctx, p.Addr(), "busy"))
	}
	fast := openWatchLog(t, ctx, testutil.Dial(t, p.Addr()))
	fast.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("busy")})

	kv := pb.NewKVClient(testutil.Dial(t, m.ClientURL))
	value := []byte(strings.Repeat("v", 32<<10))
	var revs []int64
	mostQueued := 0
	for range writes {
		r, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("busy"), Value: value})
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r.Header.Revision)
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fast.waitFor(t, ectx, map[int64]int64{0: r.Header.Revision})
		cancel()
		_, g := p.CoreState()
		mostQueued = max(mostQueued, g.Flow.QueuedBytes)
	}
	st, g := p.CoreState()
	t.Logf("%d stalled streams: at most %d bytes queued in all (bound %d); holds %d, of which for the total %d; held now %d",
		stalled, mostQueued, total, st.Holds, st.TotalHolds, g.Flow.HeldStreams)
	if limit := total + stalled*(64<<10+len(value)+1024); mostQueued > limit {
		t.Errorf("%d bytes queued for the stalled streams, more than the total bound allows (%d)", mostQueued, limit)
	}
	if st.TotalHolds < stalled || g.Flow.HeldStreams != stalled {
		t.Errorf("holds for the total bound %d, held streams %d; want every stalled stream (%d) held for it", st.TotalHolds, g.Flow.HeldStreams, stalled)
	}
	if got := len(fast.byID[0]) - 1; got != writes {
		t.Errorf("the reading client got %d events, want %d", got, writes)
	}
	for i, st := range slow {
		var got []int64
		for len(got) < writes {
			r, err := st.Recv()
			if err != nil || r.Canceled {
				t.Fatalf("stalled client %d after %d events: %v %v", i, len(got), r, err)
			}
			for _, ev := range r.Events {
				got = append(got, ev.Kv.ModRevision)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(revs) {
			t.Fatalf("stalled client %d got %v, want %v", i, got, revs)
		}
	}
}
