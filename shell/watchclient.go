package shell

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// outMsg is one response for a client stream, as the loop hands it to the
// stream's sender.
type outMsg struct {
	resp   *pb.WatchResponse
	lease  *pb.LeaseKeepAliveResponse // instead of resp, on a keep-alive stream
	shared *sharedEncoding            // the encoding of the events, shared with other watchers
	// id and header make the response of a run of shared events when resp
	// is nil (port.Send.Response).
	id     int64
	header *pb.ResponseHeader
	// more are the encodings of later responses merged into this one
	// (merger): their events follow shared's, and resp is the last one's.
	more []*sharedEncoding
	// size is the bytes the node counted for the response (for merged
	// ones, the sum of theirs).
	size int
}

// head is the watch response's fields other than its events: resp, or
// those of a run of shared events (made in h, so that nothing is
// allocated per response).
func (m *outMsg) head(h *pb.WatchResponse) *pb.WatchResponse {
	if m.resp != nil {
		return m.resp
	}
	h.Header, h.WatchId = m.header, m.id
	return h
}

// watchID is the response's watch ID.
func (m *outMsg) watchID() int64 {
	if m.resp != nil {
		return m.resp.WatchId
	}
	return m.id
}

// response is the whole watch response (for logging): merged events
// included.
func (m *outMsg) response() *pb.WatchResponse {
	if m.shared == nil {
		return m.resp
	}
	r := proto.CloneOf(m.head(&pb.WatchResponse{}))
	r.Events = slices.Clone(m.shared.events)
	for _, e := range m.more {
		r.Events = append(r.Events, e.events...)
	}
	return r
}

// clientQueue holds the responses the node gave one client stream until its
// sender writes them. The node bounds how many bytes it hands out before the
// sender reports them written, so the queue is bounded too.
type clientQueue struct {
	mu      sync.Mutex
	batches [][]outMsg // as the loop handed them over, one per Ready
	end     error      // set: end the stream with it once batches are sent
	wake    chan struct{}
}

// finish ends the stream with err once what is queued is sent.
func (q *clientQueue) finish(err error) {
	q.mu.Lock()
	q.end = err
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// push hands the queue one Ready's responses for its stream; the queue
// owns ms from then on.
func (q *clientQueue) push(ms []outMsg) {
	q.mu.Lock()
	q.batches = append(q.batches, ms)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *clientQueue) take() ([][]outMsg, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	batches := q.batches
	q.batches = nil
	return batches, q.end
}

// serveWatch serves one client watch stream through the node. A stream
// with an auth token is served in the lane of the token's user (see
// identities): its watchers share groups, and upstream streams opened
// with a token of that user, only with streams of the same user.
func (l *loop) serveWatch(stream grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse], translate func(*pb.WatchCreateRequest)) error {
	id := l.newStreamID()
	token := tokenOf(stream.Context())
	open := node.OpenStream{Stream: id, Token: token, Identity: l.ids.of(token), RequireLeader: requiresLeader(stream.Context())}
	return l.serveStream(stream, open, 0,
		func(m *outMsg) error { return stream.SendMsg(m) },
		func() (node.Input, error) {
			req, err := stream.Recv()
			if err != nil {
				return nil, err
			}
			return watchInput(id, req, translate), nil
		})
}

// serveLeaseKeepAlive serves one client LeaseKeepAlive stream through the
// node: every request is a KeepAlive input, every answer the node's.
func (l *loop) serveLeaseKeepAlive(stream grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	id := l.newStreamID()
	return l.serveStream(stream, node.OpenStream{Stream: id, Lease: true}, l.leaseWrittenEvery,
		func(m *outMsg) error { return stream.Send(m.lease) },
		func() (node.Input, error) {
			req, err := stream.Recv()
			if err != nil {
				return nil, err
			}
			return node.KeepAlive{Stream: id, ID: req.ID}, nil
		})
}

// serveStream serves one client stream through the node: open registers
// it, recv turns each client request into the node's input (nil for one
// with nothing in it), and send writes one of the node's responses. The
// bytes written are reported to the node after each batch, or, with
// writtenEvery > 0, once they add up to that many: each report is an
// input, and a keep-alive stream's answers come one at a time. Reporting
// late only makes the node count more queued than there is; writtenEvery
// is at most a quarter of the stream's bound, so a held stream that
// drained always reports.
func (l *loop) serveStream(stream grpc.ServerStream, open node.OpenStream, writtenEvery int, send func(*outMsg) error, recv func() (node.Input, error)) error {
	id := open.Stream
	q := &clientQueue{wake: make(chan struct{}, 1)}
	l.mu.Lock()
	l.clients[id] = q
	l.mu.Unlock()
	l.input(open)
	defer func() {
		l.input(node.CloseStream{Stream: id})
		l.mu.Lock()
		delete(l.clients, id)
		l.mu.Unlock()
	}()

	ctx := stream.Context()
	sendErr := make(chan error, 1)
	go func() {
		n := 0 // bytes written, not reported yet
		var g merger
		for {
			select {
			case <-q.wake:
			case <-ctx.Done():
				return
			case <-l.ctx.Done():
				return
			}
			// Report written bytes once per batch, not per response: the
			// loop hears from every stream, and 10,000 watchers make
			// 10,000 responses per event.
			batches, end := q.take()
			ms := g.merge(batches)
			for i := range ms {
				if err := send(&ms[i]); err != nil {
					sendErr <- err
					return
				}
				n += ms[i].size
			}
			// Sent: the merger's array no longer holds the responses (an idle
			// stream would keep its last burst's alive until its next one).
			clear(ms)
			if end != nil {
				sendErr <- end
				return
			}
			if n > 0 && n >= writtenEvery {
				l.input(node.Written{Stream: id, Bytes: n})
				n = 0
			}
		}
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			in, err := recv()
			if err != nil {
				recvErr <- err
				return
			}
			if in != nil {
				l.input(in)
			}
		}
	}()

	select {
	case err := <-recvErr:
		if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		return err
	case err := <-sendErr:
		return err
	case <-l.ctx.Done():
		return rpctypes.ErrGRPCStopped
	}
}

// watchInput turns a client's watch request into the node's input, or nil
// for a request with nothing in it (etcd ignores those).
func watchInput(id port.StreamID, req *pb.WatchRequest, translate func(*pb.WatchCreateRequest)) node.Input {
	switch r := req.RequestUnion.(type) {
	case *pb.WatchRequest_CreateRequest:
		if r.CreateRequest != nil {
			translate(r.CreateRequest)
			return node.WatchCreate{Stream: id, Req: r.CreateRequest}
		}
	case *pb.WatchRequest_CancelRequest:
		if r.CancelRequest != nil {
			return node.WatchCancel{Stream: id, WatchID: r.CancelRequest.WatchId}
		}
	case *pb.WatchRequest_ProgressRequest:
		if r.ProgressRequest != nil {
			return node.WatchProgress{Stream: id}
		}
	}
	return nil
}

// hasToken reports whether a client stream carries an auth token.
func hasToken(ctx context.Context) bool { return tokenOf(ctx) != "" }

// tokenOf returns the auth token a client call carries ("" for none).
func tokenOf(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	if t := md.Get(rpctypes.TokenFieldNameGRPC); len(t) > 0 {
		return t[0]
	}
	return ""
}

// requiresLeader reports whether a client stream asked for a leader
// (clientv3.WithRequireLeader).
func requiresLeader(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	l := md.Get(rpctypes.MetadataRequireLeaderKey)
	return len(l) > 0 && l[0] == rpctypes.MetadataHasLeader
}

func metadataWithToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, token)
}
