package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

var t0 = time.Now()

// now is nanoseconds since the start, on the monotonic clock.
func now() int64 { return int64(time.Since(t0)) }

func sleepUntil(t int64) {
	if d := t - now(); d > 0 {
		time.Sleep(time.Duration(d))
	}
}

// grant grants n leases of ttl seconds on etcd, with workers requests in
// flight.
func grant(lc pb.LeaseClient, n int, ttl int64, workers int) ([]int64, error) {
	ids := make([]int64, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				resp, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl})
				cancel()
				if err == nil && resp.Error != "" {
					err = errors.New(resp.Error)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("LeaseGrant: %w", err)
					}
					mu.Unlock()
					next.Store(int64(n))
					return
				}
				ids[i] = resp.ID
			}
		})
	}
	wg.Wait()
	return ids, firstErr
}

// kaStream is one client LeaseKeepAlive stream and what it is owed.
type kaStream struct {
	idx    int
	st     pb.Lease_LeaseKeepAliveClient
	leases []int // indices into load.ids

	mu      sync.Mutex
	pending map[int64][]int64 // lease ID -> send times of unanswered requests, oldest first
	lat     []int64           // answer latencies of in-window requests, ns
	err     error             // stream error before the harness closed it
}

// load is the keep-alive load on one target.
type load struct {
	ttl      int64
	interval int64        // ns between rounds of one stream
	w0, w1   atomic.Int64 // measured window [w0, w1), empty until start

	ids      []int64
	lastSent []atomic.Int64 // per lease: last keep-alive sent, ns
	streams  []*kaStream
	conns    []*grpc.ClientConn
	cancel   context.CancelFunc
	closing  atomic.Bool
	senders  sync.WaitGroup
	recvs    sync.WaitGroup

	winSent, winAnswered, winRecv atomic.Int64 // requests sent, and answered, in the window; answers received in it
	winBadTTL, badTTL             atomic.Int64 // answers with TTL <= 0 or > ttl (to in-window requests; all)
	extra                         atomic.Int64 // answers with no request waiting for them
	sent                          atomic.Int64 // every request sent
	rounds, lateRounds            atomic.Int64 // rounds sent; rounds started more than an interval late (then skipped to now)
	sendErrs, recvErrs            atomic.Int64

	exMu     sync.Mutex
	examples []string // a few bad answers and stream errors
}

func (l *load) example(format string, args ...any) {
	l.exMu.Lock()
	defer l.exMu.Unlock()
	if len(l.examples) < 5 {
		l.examples = append(l.examples, fmt.Sprintf(format, args...))
	}
}

// open dials conns connections to endpoint and opens streams keep-alive
// streams over them (stream i on connection i mod conns); lease j goes to
// streams j, j+S/dup, j+2S/dup, ... (mod S).
func openLoad(endpoint string, nLeases, nStreams, nConns, dup int, ttl int64) (*load, error) {
	l := &load{ttl: ttl, lastSent: make([]atomic.Int64, nLeases)}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for range nConns {
		c, err := probe.Dial(endpoint)
		if err != nil {
			l.close()
			return nil, err
		}
		l.conns = append(l.conns, c)
	}
	for i := range nStreams {
		st, err := pb.NewLeaseClient(l.conns[i%nConns]).LeaseKeepAlive(ctx)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("opening keep-alive stream %d: %w", i, err)
		}
		l.streams = append(l.streams, &kaStream{idx: i, st: st, pending: map[int64][]int64{}})
	}
	stride := nStreams / dup
	for j := range nLeases {
		for d := range dup {
			s := l.streams[(j+d*stride)%nStreams]
			s.leases = append(s.leases, j)
		}
	}
	for _, s := range l.streams {
		l.recvs.Go(func() { l.recvLoop(s) })
	}
	return l, nil
}

// start sends every stream's keep-alives every interval until w1, measuring
// [w0, w1) after warmup. Stream i's first round is at i*stagger/S, so that
// the leases' refresh phases behind a coalescing proxy (whose periods are
// a few intervals) spread out too, not only the rounds within an interval.
func (l *load) start(ids []int64, interval, warmup, window, stagger time.Duration) {
	l.ids, l.interval = ids, int64(interval)
	begin := now()
	l.w1.Store(begin + int64(warmup) + int64(window))
	l.w0.Store(begin + int64(warmup))
	for _, s := range l.streams {
		off := int64(stagger) * int64(s.idx) / int64(len(l.streams))
		l.senders.Go(func() { l.sendLoop(s, begin+off) })
	}
}

func (l *load) sendLoop(s *kaStream, next int64) {
	if len(s.leases) == 0 {
		return
	}
	w0, w1 := l.window()
	for next < w1 {
		sleepUntil(next)
		if t := now(); t-next > l.interval {
			l.lateRounds.Add(1)
			next = t
		}
		for _, li := range s.leases {
			id := l.ids[li]
			t := now()
			s.mu.Lock()
			s.pending[id] = append(s.pending[id], t)
			s.mu.Unlock()
			if err := s.st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
				if !l.closing.Load() {
					l.sendErrs.Add(1)
					l.example("stream %d: Send: %v", s.idx, err)
				}
				return
			}
			l.sent.Add(1)
			if t >= w0 && t < w1 {
				l.winSent.Add(1)
			}
			for {
				old := l.lastSent[li].Load()
				if old >= t || l.lastSent[li].CompareAndSwap(old, t) {
					break
				}
			}
		}
		l.rounds.Add(1)
		next += l.interval
	}
}

func (l *load) recvLoop(s *kaStream) {
	for {
		resp, err := s.st.Recv()
		if err != nil {
			if !l.closing.Load() {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				l.recvErrs.Add(1)
				l.example("stream %d: Recv: %v", s.idx, err)
			}
			return
		}
		t := now()
		w0, w1 := l.window()
		if t >= w0 && t < w1 {
			l.winRecv.Add(1)
		}
		bad := resp.TTL <= 0 || resp.TTL > l.ttl
		if bad {
			l.badTTL.Add(1)
			l.example("stream %d: lease %x answered with TTL %d", s.idx, resp.ID, resp.TTL)
		}
		s.mu.Lock()
		q := s.pending[resp.ID]
		if len(q) == 0 {
			s.mu.Unlock()
			l.extra.Add(1)
			continue
		}
		sent := q[0]
		if len(q) == 1 {
			delete(s.pending, resp.ID)
		} else {
			s.pending[resp.ID] = q[1:]
		}
		in := sent >= w0 && sent < w1
		if in {
			s.lat = append(s.lat, t-sent)
		}
		s.mu.Unlock()
		if in {
			l.winAnswered.Add(1)
			if bad {
				l.winBadTTL.Add(1)
			}
		}
	}
}

// window is [w0, w1), or empty before start.
func (l *load) window() (int64, int64) {
	return l.w0.Load(), l.w1.Load()
}

// drain waits until every sender has stopped and every in-window request
// is answered, or d has passed; it returns how long it waited after w1.
func (l *load) drain(d time.Duration) time.Duration {
	deadline := time.Now().Add(d)
	done := make(chan struct{})
	go func() {
		l.senders.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
	}
	for l.winAnswered.Load() < l.winSent.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return time.Duration(now() - l.w1.Load())
}

// close closes every stream and connection; nothing that fails after this
// counts as an error.
func (l *load) close() {
	l.closing.Store(true)
	if l.cancel != nil {
		l.cancel()
	}
	for _, c := range l.conns {
		c.Close()
	}
	done := make(chan struct{})
	go func() {
		l.senders.Wait()
		l.recvs.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		logf("some keep-alive streams did not end within 10 s of closing")
	}
}

// latencies are every in-window request's answer latency, sorted.
func (l *load) latencies() []int64 {
	var all []int64
	for _, s := range l.streams {
		s.mu.Lock()
		all = append(all, s.lat...)
		s.mu.Unlock()
	}
	slices.Sort(all)
	return all
}

// lastKeepAlive is when the last keep-alive was sent, ns.
func (l *load) lastKeepAlive() int64 {
	var m int64
	for i := range l.lastSent {
		m = max(m, l.lastSent[i].Load())
	}
	return m
}

// expiry is what polling one lease's TimeToLive on etcd showed after the
// clients stopped, relative to the last keep-alive sent for it.
type expiry struct {
	expired time.Duration // estimated expiry on etcd: first poll with TTL <= 0, plus 1 s, less half a poll
	revoked time.Duration // first poll that found no lease (clientv3 reports TTL -1)
	gotE    bool
	gotR    bool
}

// pollExpiry polls TimeToLive on etcd for each sampled lease every poll
// until etcd no longer knows it, or timeout.
func (l *load) pollExpiry(lc pb.LeaseClient, sample []int, poll, timeout time.Duration) (out []expiry, errs int64) {
	out = make([]expiry, len(sample))
	deadline := time.Now().Add(timeout)
	var nerr atomic.Int64
	var wg sync.WaitGroup
	for k, li := range sample {
		wg.Go(func() {
			id := l.ids[li]
			for time.Now().Before(deadline) {
				t := now()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := lc.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id})
				cancel()
				last := l.lastSent[li].Load()
				switch {
				case err != nil && rpctypes.Error(err) == rpctypes.ErrLeaseNotFound,
					err == nil && resp.TTL == -1 && resp.GrantedTTL == 0:
					// etcd answers TTL -1 (and no granted TTL) for a lease
					// it does not know.
					out[k].revoked, out[k].gotR = time.Duration(t-last), true
					return
				case err != nil:
					nerr.Add(1)
				case resp.TTL <= 0 && !out[k].gotE:
					// etcd truncates the remaining time: TTL 0 first shows
					// when less than 1 s remains.
					out[k].expired = time.Duration(t-last) + time.Second - poll/2
					out[k].gotE = true
				}
				time.Sleep(poll)
			}
		})
	}
	wg.Wait()
	return out, nerr.Load()
}

// awaitGone waits until etcd lists none of ids, or timeout; it revokes any
// left and returns how many were.
func awaitGone(lc pb.LeaseClient, ids []int64, timeout time.Duration) (int, error) {
	want := make(map[int64]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := lc.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
		cancel()
		if err != nil {
			return 0, fmt.Errorf("LeaseLeases: %w", err)
		}
		var left []int64
		for _, ls := range resp.Leases {
			if want[ls.ID] {
				left = append(left, ls.ID)
			}
		}
		if len(left) == 0 {
			return 0, nil
		}
		if time.Now().After(deadline) {
			for _, id := range left {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, _ = lc.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
				cancel()
			}
			return len(left), nil
		}
		time.Sleep(time.Second)
	}
}
