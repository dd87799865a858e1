package main

// What every part of the load shares: the clients, the run's clock, the
// newest revision seen, and the tally of client errors.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/status"
)

func newClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// clock is the time since the load started.
type clock struct{ t0 time.Time }

func (c clock) now() time.Duration { return time.Since(c.t0) }

// revTracker is the newest store revision any answer carried, and the
// first revision of the run (what the watch sessions may start from).
type revTracker struct {
	first  int64
	newest atomic.Int64
}

func (r *revTracker) saw(rev int64) {
	for {
		cur := r.newest.Load()
		if rev <= cur || r.newest.CompareAndSwap(cur, rev) {
			return
		}
	}
}

func (r *revTracker) known() int64 { return r.newest.Load() }

// errKey is one kind of client error on one RPC.
type errKey struct{ rpc, kind string }

type errCount struct {
	n           int
	first, last time.Duration
}

// tally counts client errors by RPC and kind.
type tally struct {
	clk   clock
	total atomic.Int64
	mu    sync.Mutex
	m     map[errKey]*errCount
}

func newTally(clk clock) *tally { return &tally{clk: clk, m: map[errKey]*errCount{}} }

func (t *tally) add(rpc string, err error) { t.addKind(rpc, errKind(err)) }

func (t *tally) addKind(rpc, kind string) {
	at := t.clk.now()
	t.total.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.m[errKey{rpc, kind}]
	if c == nil {
		c = &errCount{first: at}
		t.m[errKey{rpc, kind}] = c
	}
	c.n++
	c.last = at
}

func (t *tally) snapshot() map[errKey]errCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[errKey]errCount, len(t.m))
	for k, v := range t.m {
		out[k] = *v
	}
	return out
}

// errKind names an error by its gRPC code and message, digits folded so
// that errors differing only in numbers (ports, revisions) count together.
func errKind(err error) string {
	var code, msg string
	var ee rpctypes.EtcdError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = "DeadlineExceeded", "client deadline"
	case errors.Is(err, context.Canceled):
		code, msg = "Canceled", "client context"
	case errors.As(err, &ee):
		code, msg = ee.Code().String(), ee.Error()
	default:
		if s, ok := status.FromError(err); ok {
			code, msg = s.Code().String(), s.Message()
		} else {
			code, msg = "-", err.Error()
		}
	}
	var b strings.Builder
	digits := false
	for _, r := range msg {
		if r >= '0' && r <= '9' {
			if !digits {
				b.WriteByte('N')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(r)
	}
	msg = b.String()
	if len(msg) > 150 {
		msg = msg[:150] + "…"
	}
	return fmt.Sprintf("%s: %s", code, msg)
}

// prefixKey is the i'th watched prefix; keyOf the key of put number seq.
func prefixKey(i int) string { return fmt.Sprintf("soak/p%02d/", i) }

func keyOf(prefixes int, seq uint64) string {
	return fmt.Sprintf("%s%09d", prefixKey(int(seq%uint64(prefixes))), seq)
}

// historyPrefix covers every watched prefix and the end marker, and no
// lease key.
const (
	historyPrefix = "soak/p"
	endMarker     = "soak/p~end"
)
