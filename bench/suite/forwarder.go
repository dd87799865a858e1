package main

import (
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/internal/rawcodec"
	"github.com/etcdproxy/etcdproxy/shell"
)

// The unary ceiling is this binary run again with -serve=forwarder: a
// gRPC server that relays every unary call to etcd over one connection,
// request and response bytes as they are (no decoding, no interceptors,
// no metrics, no logic). Any unary proxy pays at least what it costs:
// one more gRPC hop.

func init() { ceilings["forwarder"] = serveForwarder }

// serveForwarder relays calls on addr to the etcd member at upstream until
// killed.
func serveForwarder(addr, upstream string) error {
	up, err := probe.Dial(upstream)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawcodec.Codec{}), grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		method, ok := grpc.MethodFromServerStream(st)
		if !ok {
			return fmt.Errorf("no method")
		}
		var in, out []byte
		if err := st.RecvMsg(&in); err != nil {
			return err
		}
		if err := up.Invoke(st.Context(), method, &in, &out, grpc.ForceCodec(rawcodec.Codec{})); err != nil {
			return err
		}
		return st.SendMsg(&out)
	}))
	fmt.Fprintln(os.Stderr, shell.ReadyMessage)
	return srv.Serve(lis)
}
