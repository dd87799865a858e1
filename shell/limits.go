package shell

import (
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Limits an operator sets on what one client may hold, so that one careless
// or hostile client cannot grow the proxy without bound: streams per client
// connection (--max-streams-per-connection, here) and watches per watch
// stream (--max-watches-per-stream, in the watch machine). A stream over
// the limit is refused with ResourceExhausted, a watch with a refusal whose
// cancel reason names the flag; what the client already holds goes on.

// connStreams counts the streams open on one client connection.
type connStreams struct{ n atomic.Int64 }

// errTooManyStreams is the refusal of a stream over the limit.
func errTooManyStreams(limit int) error {
	return status.Errorf(codes.ResourceExhausted, "etcdproxy: too many streams on this connection (limit --max-streams-per-connection=%d)", limit)
}

// streamLimit refuses a stream beyond limit open on its connection.
func streamLimit(limit int) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		cs := connOf(ss.Context())
		if cs == nil {
			return handler(srv, ss)
		}
		c := &cs.streams
		if c.n.Add(1) > int64(limit) {
			c.n.Add(-1)
			return errTooManyStreams(limit)
		}
		defer c.n.Add(-1)
		return handler(srv, ss)
	}
}
