package shell

import (
	"context"
	"errors"
	"io"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/etcdproxy/etcdproxy/core/watch"
)

// clientQueue holds the responses the machine gave one client stream until
// its sender writes them. The machine bounds how many bytes it hands out
// before the sender reports them written, so the queue is bounded too.
type clientQueue struct {
	mu    sync.Mutex
	items []watch.Send
	wake  chan struct{}
}

func (q *clientQueue) push(s watch.Send) {
	q.mu.Lock()
	q.items = append(q.items, s)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *clientQueue) take() []watch.Send {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

// serveCoalesced serves one client watch stream through the watch machine.
func (l *watchLoop) serveCoalesced(id watch.StreamID, stream grpc.BidiStreamingServer[pb.WatchRequest, pb.WatchResponse], translate func(*pb.WatchCreateRequest)) error {
	q := &clientQueue{wake: make(chan struct{}, 1)}
	l.mu.Lock()
	l.streams[id] = q
	l.mu.Unlock()
	l.input(func(m *watch.Machine) { m.OpenStream(id, "") })
	defer func() {
		l.input(func(m *watch.Machine) { m.CloseStream(id) })
		l.mu.Lock()
		delete(l.streams, id)
		l.mu.Unlock()
	}()

	ctx := stream.Context()
	sendErr := make(chan error, 1)
	go func() {
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
			n := 0
			for _, s := range q.take() {
				if err := stream.Send(s.Resp); err != nil {
					sendErr <- err
					return
				}
				n += s.Size
			}
			if n > 0 {
				l.input(func(m *watch.Machine) { m.Sent(id, n) })
			}
		}
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch r := req.RequestUnion.(type) {
			case *pb.WatchRequest_CreateRequest:
				if r.CreateRequest == nil {
					continue
				}
				translate(r.CreateRequest)
				cr := r.CreateRequest
				l.input(func(m *watch.Machine) { m.Create(id, cr) })
			case *pb.WatchRequest_CancelRequest:
				if r.CancelRequest == nil {
					continue
				}
				wid := r.CancelRequest.WatchId
				l.input(func(m *watch.Machine) { m.Cancel(id, wid) })
			case *pb.WatchRequest_ProgressRequest:
				l.input(func(m *watch.Machine) { m.RequestProgress(id) })
			}
		}
	}()

	select {
	case err := <-recvErr:
		if err == context.Canceled || ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case err := <-sendErr:
		return err
	case <-l.ctx.Done():
		return rpctypes.ErrGRPCStopped
	}
}

// hasToken reports whether a client stream carries an auth token.
func hasToken(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(rpctypes.TokenFieldNameGRPC)) > 0
}

func metadataWithToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, token)
}
