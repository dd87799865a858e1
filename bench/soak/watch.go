package main

// The watchers: each opens watch sessions one after another, each on one
// prefix from an explicit start revision, held for a random time, then
// cancelled; and, on each connection, a RequestProgress every -progress.

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// foreign marks a received key that is not a key of the session's prefix
// written by the bench.
const foreign = math.MaxUint32

// session is one watch session, as received.
type session struct {
	prefix  int
	start   int64 // the revision the session watched from
	catchup bool  // started from an older revision than the newest known
	// events are the events received, in order, each rev<<32 | seq (the
	// put's number parsed from the key; foreign if not one of ours). A
	// run's revisions stay far below 2^32.
	events []uint64
	// progress is the highest revision of a progress notification
	// received: every event up to it was delivered.
	progress int64
	// late counts events received at or below a progress revision
	// received before them.
	late    int
	rewatch int // watches made again after the watch closed on its own
	// knownAtEnd is the newest revision any client call had seen when
	// the session ended: events up to it had been acknowledged.
	knownAtEnd int64
}

// lastRev is the last revision the session knows it has every event up
// to: its last event's or its last progress notification's.
func (s *session) lastRev() int64 {
	last := s.progress
	if n := len(s.events); n > 0 {
		last = max(last, int64(s.events[n-1]>>32))
	}
	return last
}

type watchLoad struct {
	o       options
	clients []*clientv3.Client
	revs    *revTracker
	errs    *tally

	active   atomic.Int64 // watches open now
	received atomic.Int64 // events received so far
	started  atomic.Int64 // sessions started so far

	sessions [][]*session // by watcher, each owned by its goroutine until run returns
}

// watchCtx carries the metadata every watch and RequestProgress uses, so
// that they share one gRPC watch stream per connection.
func (wl *watchLoad) watchCtx(ctx context.Context) context.Context {
	if wl.o.requireLeader {
		return clientv3.WithRequireLeader(ctx)
	}
	return ctx
}

// run runs the watchers and the progress requests until ctx ends.
func (wl *watchLoad) run(ctx context.Context) {
	wl.sessions = make([][]*session, wl.o.watchers)
	var wg sync.WaitGroup
	seed := uint64(time.Now().UnixNano())
	for i := range wl.o.watchers {
		cli := wl.clients[i%len(wl.clients)]
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() {
			// The watchers start over -hold-max, so that the load ramps up
			// and the sessions do not start and end in step.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(rng.Int64N(int64(wl.o.holdMax)))):
			}
			for ctx.Err() == nil {
				wl.sessions[i] = append(wl.sessions[i], wl.session(ctx, cli, rng))
			}
		})
	}
	if wl.o.progress > 0 {
		for _, cli := range wl.clients {
			wg.Go(func() { wl.requestProgress(ctx, cli) })
		}
	}
	wg.Wait()
}

// session runs one watch session until its hold time is over or ctx ends.
func (wl *watchLoad) session(ctx context.Context, cli *clientv3.Client, rng *rand.Rand) *session {
	wl.started.Add(1)
	s := &session{prefix: rng.IntN(wl.o.prefixes)}
	known := max(wl.revs.known(), wl.revs.first)
	s.start = known
	if span := known - wl.revs.first; span > 0 && rng.Float64() < wl.o.catchup {
		// Log-uniform in [1, span]: mostly recent, some from the start.
		back := int64(math.Exp(rng.Float64() * math.Log(float64(span))))
		s.start, s.catchup = max(known-back, wl.revs.first), true
	}
	hold := wl.o.holdMin + time.Duration(rng.Int64N(int64(wl.o.holdMax-wl.o.holdMin)+1))
	deadline := time.Now().Add(hold)
	next := s.start
	defer func() { s.knownAtEnd = wl.revs.known() }()
	for wl.watch(ctx, cli, s, &next, deadline) {
		s.rewatch++
		select {
		case <-ctx.Done():
			return s
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return s
		}
	}
	return s
}

// watch watches s's prefix from *next until deadline or ctx ends, and
// reports whether the watch closed on its own before (a client error).
func (wl *watchLoad) watch(ctx context.Context, cli *clientv3.Client, s *session, next *int64, deadline time.Time) (closed bool) {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	prefix := prefixKey(s.prefix)
	wl.active.Add(1)
	defer wl.active.Add(-1)
	sawErr := false
	for resp := range cli.Watch(wl.watchCtx(wctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(*next)) {
		if wctx.Err() != nil {
			continue // our own cancel: drain until clientv3 closes the channel
		}
		if err := resp.Err(); err != nil {
			wl.errs.add("Watch", err)
			sawErr = true
			continue
		}
		if resp.IsProgressNotify() {
			s.progress = max(s.progress, resp.Header.Revision)
			continue
		}
		for _, ev := range resp.Events {
			rev := ev.Kv.ModRevision
			if rev <= s.progress {
				s.late++
			}
			s.events = append(s.events, uint64(rev)<<32|uint64(seqOf(string(ev.Kv.Key), prefix)))
			*next = rev + 1
		}
		wl.received.Add(int64(len(resp.Events)))
	}
	if wctx.Err() != nil {
		return false
	}
	if !sawErr {
		wl.errs.addKind("Watch", "channel closed without an error")
	}
	return true
}

// seqOf is the put number in key if key is prefix followed by one.
func seqOf(key, prefix string) uint32 {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return foreign
	}
	n, err := strconv.ParseUint(rest, 10, 32)
	if err != nil || n >= foreign {
		return foreign
	}
	return uint32(n)
}

// requestProgress asks for a progress notification on cli's watch stream
// every -progress; clientv3 hands it to every watch of the stream.
func (wl *watchLoad) requestProgress(ctx context.Context, cli *clientv3.Client) {
	tk := time.NewTicker(wl.o.progress)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		rctx, cancel := context.WithTimeout(ctx, wl.o.rpcTimeout)
		err := cli.RequestProgress(wl.watchCtx(rctx))
		cancel()
		if err != nil && ctx.Err() == nil {
			wl.errs.add("RequestProgress", err)
		}
	}
}
