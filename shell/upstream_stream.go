package shell

import (
	"context"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// upstreamConn is one open upstream stream, whatever its RPC: requests go
// out as the node wrote them, responses come back as the node's inputs.
type upstreamConn interface {
	Send(port.UpstreamRequest) error
	Recv() (node.Input, error)
}

// opener opens an upstream stream.
type opener func(context.Context) (upstreamConn, error)

// watchOpener opens upstream Watch streams for upstream u, carrying token
// ("" for none: the default lane).
func watchOpener(wc pb.WatchClient, u port.UpstreamID, token string) opener {
	return func(ctx context.Context) (upstreamConn, error) {
		if token != "" {
			ctx = metadataWithToken(ctx, token)
		}
		st, err := wc.Watch(ctx)
		if err != nil {
			return nil, err
		}
		return watchConn{u, st}, nil
	}
}

type watchConn struct {
	u  port.UpstreamID
	st pb.Watch_WatchClient
}

func (c watchConn) Send(r port.UpstreamRequest) error { return c.st.Send(r.Watch) }

func (c watchConn) Recv() (node.Input, error) {
	r, err := c.st.Recv()
	if err != nil {
		return nil, err
	}
	return node.UpstreamResponse{Upstream: c.u, Watch: r}, nil
}

// leaseOpener opens the upstream LeaseKeepAlive stream.
func leaseOpener(lc pb.LeaseClient) opener {
	return func(ctx context.Context) (upstreamConn, error) {
		st, err := lc.LeaseKeepAlive(ctx)
		if err != nil {
			return nil, err
		}
		return leaseConn{st}, nil
	}
}

type leaseConn struct {
	st pb.Lease_LeaseKeepAliveClient
}

func (c leaseConn) Send(r port.UpstreamRequest) error { return c.st.Send(r.Lease) }

func (c leaseConn) Recv() (node.Input, error) {
	r, err := c.st.Recv()
	if err != nil {
		return nil, err
	}
	return node.UpstreamResponse{Upstream: port.LeaseKeepAlive, Lease: r}, nil
}

// Reconnect backoff: from backoffMin, doubling up to backoffMax.
const (
	backoffMin = 50 * time.Millisecond
	backoffMax = time.Second
)

// upstreamStream keeps one upstream stream open, reopening it when it
// breaks, and sends it the node's requests in order.
type upstreamStream struct {
	loop  *loop
	id    port.UpstreamID
	open  opener
	token string // the auth token open's streams carry
	// ctx ends with the loop, or earlier with end (a lane that ended).
	ctx context.Context
	end context.CancelFunc

	mu    sync.Mutex
	queue []port.UpstreamRequest
	lost  uint64 // UpstreamLost inputs handed to the loop
	epoch uint64 // how many of them the loop has taken (voiding the queue)
	wake  chan struct{}
	stop  context.CancelFunc // ends the stream open now
	// reopened: the next stream opened is reported lost even if it is the
	// first (see retoken).
	reopened bool
}

// retoken ends the stream open now and has run open the next ones with
// open (a new token); the next one opened is reported to the node as lost,
// so that it creates its watches again there.
func (u *upstreamStream) retoken(open opener, token string) {
	u.mu.Lock()
	u.open, u.token, u.reopened = open, token, true
	stop := u.stop
	u.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// restart ends the stream open now; run reopens it (on the member in use).
func (u *upstreamStream) restart() {
	u.mu.Lock()
	stop := u.stop
	u.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func newUpstreamStream(l *loop, id port.UpstreamID, open opener) *upstreamStream {
	ctx, end := context.WithCancel(l.ctx)
	return &upstreamStream{loop: l, id: id, open: open, ctx: ctx, end: end, wake: make(chan struct{}, 1)}
}

func (u *upstreamStream) push(r port.UpstreamRequest) {
	u.mu.Lock()
	u.queue = append(u.queue, r)
	u.mu.Unlock()
	u.wakeUp()
}

// void drops what is queued for a stream that broke; the loop calls it when
// it takes the UpstreamLost input, before the node hears of the loss.
func (u *upstreamStream) void() {
	u.mu.Lock()
	u.queue = nil
	u.epoch++
	u.mu.Unlock()
	u.wakeUp()
}

func (u *upstreamStream) wakeUp() {
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// take returns what is queued, or nothing while the loop has not yet taken
// every loss reported so far (epoch below want).
func (u *upstreamStream) take(want uint64) []port.UpstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.epoch < want {
		return nil
	}
	q := u.queue
	u.queue = nil
	return q
}

func (u *upstreamStream) run() {
	l := u.loop
	defer l.wg.Done()
	backoff := backoffMin
	first := true
	var want uint64 // the epoch the current stream may send in
	for u.ctx.Err() == nil {
		sctx, cancel := context.WithCancel(u.ctx)
		u.mu.Lock()
		u.stop = cancel
		open, token := u.open, u.token
		u.mu.Unlock()
		conn, err := open(sctx)
		if err != nil {
			cancel()
			select {
			case <-l.clock.After(backoff):
			case <-u.ctx.Done():
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff = backoffMin
		u.mu.Lock()
		reopened := u.reopened
		u.reopened = false
		u.mu.Unlock()
		if !first || reopened {
			// Everything the node asked of the broken stream is void. The
			// loop drops it when it takes this input, in order with every
			// other input, and the node then asks for every watch again;
			// nothing goes out on the new stream before that. (Before the
			// first stream nothing was sent, so its queue is kept.)
			u.mu.Lock()
			u.lost++
			want = u.lost
			u.mu.Unlock()
			l.input(node.UpstreamLost{Upstream: u.id, Token: token})
		}
		first = false
		recvDone := make(chan struct{})
		go func() {
			defer close(recvDone)
			for {
				in, err := conn.Recv()
				if err != nil {
					if u.ctx.Err() == nil {
						l.lg.Warn("upstream stream broke; reopening", zap.Stringer("stream", u.id), zap.Error(err))
					}
					return
				}
				l.input(in)
			}
		}()
	send:
		for {
			for _, r := range u.take(want) {
				if err := conn.Send(r); err != nil {
					break send
				}
			}
			select {
			case <-u.wake:
			case <-recvDone:
				break send
			case <-u.ctx.Done():
				break send
			}
		}
		cancel()
		<-recvDone
	}
}
