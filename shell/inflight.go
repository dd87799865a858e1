package shell

import (
	"context"
	"errors"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// errMemberLeft is the cause given to the calls ended because the proxy
// left the member they were on.
var errMemberLeft = errors.New("the proxy left the etcd member")

// inflight tracks the calls in flight on the connection to etcd, by the
// member in use when each started, so that a switch can end the ones on
// the member left. gRPC itself lets them run on: it drains the connection
// to a member that leaves the address list, so a call to a silent member
// would hang until its deadline, and one to a member without a leader until
// etcd's own request timeout.
type inflight struct {
	mu    sync.Mutex
	next  uint64
	calls map[uint64]inflightCall
}

type inflightCall struct {
	member string
	cancel context.CancelCauseFunc
}

// start registers a stream on member; the returned context ends when the
// stream is done (done is called) or the member is left. The stream is
// forgotten then, or when ctx ends.
func (f *inflight) start(ctx context.Context, member string) (context.Context, func()) {
	ctx, cancel, id := f.add(ctx, member)
	context.AfterFunc(ctx, func() { f.forget(id) })
	return ctx, func() { cancel(nil) }
}

// startUnary registers a unary call on member, as start does, for a
// caller that always calls done: no AfterFunc (a goroutine per call when
// the context ends).
func (f *inflight) startUnary(ctx context.Context, member string) (context.Context, func()) {
	ctx, cancel, id := f.add(ctx, member)
	return ctx, func() {
		f.forget(id)
		cancel(nil)
	}
}

func (f *inflight) add(ctx context.Context, member string) (context.Context, context.CancelCauseFunc, uint64) {
	ctx, cancel := context.WithCancelCause(ctx)
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[uint64]inflightCall{}
	}
	id := f.next
	f.next++
	f.calls[id] = inflightCall{member: member, cancel: cancel}
	f.mu.Unlock()
	return ctx, cancel, id
}

func (f *inflight) forget(id uint64) {
	f.mu.Lock()
	delete(f.calls, id)
	f.mu.Unlock()
}

// leave ends every call started on member.
func (f *inflight) leave(member string) {
	f.mu.Lock()
	var ends []context.CancelCauseFunc
	for _, c := range f.calls {
		if c.member == member {
			ends = append(ends, c.cancel)
		}
	}
	f.mu.Unlock()
	for _, end := range ends {
		end(errMemberLeft)
	}
}

// leftErr is what a call ended by a switch returns: Unavailable, which
// clients (and the proxy's own retries of idempotent calls) retry.
func leftErr(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errMemberLeft) {
		return status.Error(codes.Unavailable, "etcdproxy: the etcd member in use was left while the request was in flight; it may or may not have been applied")
	}
	return err
}

// unaryInflight makes a unary call on the member in use. A call that
// reached no member (the connection had no transport: the member in use
// had gone, or the proxy had just moved and was still connecting, so gRPC
// sent it nowhere) waits until the connection is ready again, on whatever
// member is in use by then, at most retryWait and never past the call's
// own deadline, and is made once more: it cannot have been applied, so a
// write is as safe to send again as a read (clientv3 likewise resends a
// write that found no connection).
func (u *upstream) unaryInflight(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := u.unaryOn(ctx, u.Member(), method, req, reply, cc, invoker, opts...)
	if !sentNowhere(err) || !u.awaitReady(ctx) {
		return err
	}
	return u.unaryOn(ctx, u.Member(), method, req, reply, cc, invoker, opts...)
}

// awaitReady waits, at most retryWait and while ctx lasts, until the
// connection to etcd has a transport; it reports whether it has.
func (u *upstream) awaitReady(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, u.retryWait)
	defer cancel()
	for {
		st := u.conn.GetState()
		if st == connectivity.Ready {
			return true
		}
		if st == connectivity.Shutdown || !u.conn.WaitForStateChange(ctx, st) {
			return false
		}
	}
}

func (u *upstream) unaryOn(ctx context.Context, member, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, done := u.calls.startUnary(ctx, member)
	defer done()
	return leftErr(ctx, invoker(ctx, method, req, reply, cc, opts...))
}

// sentNowhere reports whether err is gRPC's failure of a call it could not
// send: the connection's last error, given to calls made while it has no
// transport ("connection error: desc = ..."); a call that had been sent
// and then lost its connection fails otherwise ("error reading from
// server", "transport is closing").
func sentNowhere(err error) bool {
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.Unavailable && strings.HasPrefix(s.Message(), "connection error:")
}

func (u *upstream) streamInflight(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, done := u.calls.start(ctx, u.Member())
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		done()
		return nil, leftErr(ctx, err)
	}
	return &inflightStream{ClientStream: cs, ctx: ctx, done: done}, nil
}

// inflightStream is a stream on the connection to etcd: once it ends, it
// is forgotten, and if a switch ended it, it says so with Unavailable.
type inflightStream struct {
	grpc.ClientStream
	ctx  context.Context
	done func()
}

func (s *inflightStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.done()
		return leftErr(s.ctx, err)
	}
	return nil
}

func (s *inflightStream) SendMsg(m any) error { return leftErr(s.ctx, s.ClientStream.SendMsg(m)) }
