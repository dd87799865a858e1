package shell

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
)

// relay joins a client's bidirectional stream to an upstream one: requests
// flow up through up, responses down through down. up may answer a request
// itself by returning a response, which then goes to the client instead of
// the request going to etcd. relay returns when either side ends; the
// upstream stream is torn down with it. An error from etcd is handed to the
// client unchanged; the client's own end of stream is not an error.
func relay[Req, Resp any](
	client grpc.BidiStreamingServer[Req, Resp],
	open func(context.Context) (grpc.BidiStreamingClient[Req, Resp], error),
	up func(context.Context, *Req) *Resp,
	down func(*Resp),
) error {
	ctx := client.Context()
	out, cancel := outgoing(ctx)
	defer cancel()
	upstream, err := open(out)
	if err != nil {
		return upstreamErr(ctx, err)
	}
	var sendMu sync.Mutex // both goroutines below may answer the client
	send := func(r *Resp) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return client.Send(r)
	}
	errc := make(chan error, 2)
	go func() {
		for {
			req, err := client.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				errc <- err
				return
			}
			if resp := up(out, req); resp != nil {
				if err := send(resp); err != nil {
					errc <- err
					return
				}
				continue
			}
			if err := upstream.Send(req); err != nil {
				// The receive side below reports why the stream broke.
				return
			}
		}
	}()
	go func() {
		for {
			resp, err := upstream.Recv()
			if err != nil {
				if ctx.Err() == nil {
					err = upstreamErr(ctx, err)
				}
				errc <- err
				return
			}
			down(resp)
			if err := send(resp); err != nil {
				errc <- err
				return
			}
		}
	}()
	err = <-errc
	return err
}

// relayDown relays a server-streaming call: open starts it upstream with the
// client's credentials and each response passes through down on its way to
// the client.
func relayDown[Resp any](
	client grpc.ServerStreamingServer[Resp],
	open func(context.Context) (grpc.ServerStreamingClient[Resp], error),
	down func(*Resp),
) error {
	ctx := client.Context()
	out, cancel := outgoing(ctx)
	defer cancel()
	st, err := open(out)
	if err != nil {
		return upstreamErr(ctx, err)
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return upstreamErr(ctx, err)
		}
		down(resp)
		if err := client.Send(resp); err != nil {
			return err
		}
	}
}
