package shell

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/core/watch"
)

// tickInterval is how often the watch machine hears the time.
const tickInterval = 50 * time.Millisecond

// watchLoop is the one event loop that owns the watch machine: every input
// reaches the machine through it, in order, and it carries out what the
// machine returns. Client streams, upstream streams and revision fetches run
// on goroutines of their own and talk to the loop only through inputs.
type watchLoop struct {
	lg    *zap.Logger
	clock clock.Clock
	kv    pb.KVClient
	wc    pb.WatchClient

	inputs chan func(*watch.Machine)
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards streams and snapshot
	streams map[watch.StreamID]*clientQueue
	stats   watch.Stats
	gauges  watch.Gauges

	ups [2]*upstreamStream
}

func newWatchLoop(lg *zap.Logger, clk clock.Clock, cfg watch.Config, kv pb.KVClient, wc pb.WatchClient) *watchLoop {
	l := &watchLoop{lg: lg, clock: clk, kv: kv, wc: wc, inputs: make(chan func(*watch.Machine), 1024), streams: map[watch.StreamID]*clientQueue{}}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	for u := range l.ups {
		l.ups[u] = &upstreamStream{loop: l, which: watch.Upstream(u), wake: make(chan struct{}, 1)}
	}
	m := watch.New(cfg, clk.Now())
	l.wg.Add(1 + len(l.ups))
	go l.run(m)
	for _, u := range l.ups {
		go u.run()
	}
	return l
}

// input hands a step to the loop; it gives up when the loop has stopped.
func (l *watchLoop) input(f func(*watch.Machine)) {
	select {
	case l.inputs <- f:
	case <-l.ctx.Done():
	}
}

func (l *watchLoop) run(m *watch.Machine) {
	defer l.wg.Done()
	t := l.clock.Ticker(tickInterval)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case f := <-l.inputs:
			f(m)
			// Take whatever else is already waiting before acting, so that
			// creates arriving together share one revision fetch.
			for more := true; more; {
				select {
				case f := <-l.inputs:
					f(m)
				default:
					more = false
				}
			}
		case now := <-t.C:
			m.Tick(now)
		}
		l.execute(m.Ready())
		l.mu.Lock()
		l.stats, l.gauges = m.Stats(), m.Gauges()
		l.mu.Unlock()
	}
}

func (l *watchLoop) execute(r watch.Ready) {
	for _, s := range r.Sends {
		l.mu.Lock()
		q := l.streams[s.Stream]
		l.mu.Unlock()
		if q != nil {
			q.push(s)
		}
	}
	for _, u := range r.Upstream {
		l.ups[u.Stream].push(u.Req)
	}
	for _, f := range r.Fetches {
		go l.fetch(f)
	}
}

// fetch reads the store revision for the machine (see watch.Fetch).
func (l *watchLoop) fetch(f watch.Fetch) {
	ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
	defer cancel()
	if f.Token != "" {
		ctx = metadataWithToken(ctx, f.Token)
	}
	req := &pb.RangeRequest{Key: f.Key, RangeEnd: f.End, Limit: 1, KeysOnly: true, Revision: f.Revision}
	resp, err := l.kv.Range(ctx, req)
	var res watch.FetchResult
	switch {
	case err == nil:
		res.Header = resp.Header
	case errors.Is(err, rpctypes.ErrGRPCFutureRev) || errors.Is(err, rpctypes.ErrGRPCCompacted):
		// A start revision in the future, or compacted: the current
		// revision still has to be read.
		res.Compacted = errors.Is(err, rpctypes.ErrGRPCCompacted)
		req.Revision = 0
		if resp, err = l.kv.Range(ctx, req); err == nil {
			res.Header = resp.Header
		} else {
			res.Err, res.Retry = err, retryable(err)
		}
	default:
		res.Err, res.Retry = err, retryable(err)
	}
	if l.ctx.Err() != nil {
		return
	}
	l.input(func(m *watch.Machine) { m.Fetched(f.ID, res) })
}

// retryable tells transport trouble, worth another try, from etcd's
// verdicts on the request.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal, codes.ResourceExhausted:
		return true
	}
	return false
}

// snapshot returns the machine's counters as of the last step.
func (l *watchLoop) snapshot() (watch.Stats, watch.Gauges) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats, l.gauges
}

func (l *watchLoop) close() {
	l.cancel()
	for _, u := range l.ups {
		u.wakeUp()
	}
	l.wg.Wait()
}

// ---- upstream streams ----

// upstreamStream keeps one upstream watch stream open, reopening it when it
// breaks, and sends it the machine's requests in order.
type upstreamStream struct {
	loop  *watchLoop
	which watch.Upstream

	mu    sync.Mutex
	queue []*pb.WatchRequest
	wake  chan struct{}
}

func (u *upstreamStream) push(r *pb.WatchRequest) {
	u.mu.Lock()
	u.queue = append(u.queue, r)
	u.mu.Unlock()
	u.wakeUp()
}

func (u *upstreamStream) wakeUp() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *upstreamStream) run() {
	l := u.loop
	defer l.wg.Done()
	backoff := 50 * time.Millisecond
	first := true
	for l.ctx.Err() == nil {
		sctx, cancel := context.WithCancel(l.ctx)
		st, err := l.wc.Watch(sctx)
		if err != nil {
			cancel()
			select {
			case <-time.After(backoff):
			case <-l.ctx.Done():
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if !first {
			// Everything the machine asked of the broken stream is void: on
			// the loop, in order with every other input, drop what is
			// queued and tell the machine, which then opens every watch
			// again. Nothing goes out on the new stream before that, so no
			// stale request can reach it. (Before the first stream nothing
			// was sent, so its queue is kept.)
			lost := make(chan struct{})
			l.input(func(m *watch.Machine) {
				u.mu.Lock()
				u.queue = nil
				u.mu.Unlock()
				m.UpstreamLost(u.which)
				close(lost)
			})
			select {
			case <-lost:
			case <-l.ctx.Done():
				cancel()
				return
			}
		}
		first = false
		recvDone := make(chan struct{})
		go func() {
			defer close(recvDone)
			for {
				resp, err := st.Recv()
				if err != nil {
					if l.ctx.Err() == nil {
						l.lg.Warn("upstream watch stream broke; reopening", zap.Stringer("stream", u.which), zap.Error(err))
					}
					return
				}
				l.input(func(m *watch.Machine) { m.Upstream(u.which, resp) })
			}
		}()
	send:
		for {
			u.mu.Lock()
			q := u.queue
			u.queue = nil
			u.mu.Unlock()
			for _, r := range q {
				if err := st.Send(r); err != nil {
					break send
				}
			}
			select {
			case <-u.wake:
			case <-recvDone:
				break send
			case <-l.ctx.Done():
				break send
			}
		}
		cancel()
		<-recvDone
	}
}
