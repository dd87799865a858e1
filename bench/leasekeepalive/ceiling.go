package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/shell"
)

// The ceiling target is this binary run again with -serve-ceiling: a bare
// gRPC server whose LeaseKeepAlive answers every request at once, on its
// own stream, with the full TTL and an etcd-shaped header, and does
// nothing else (no upstream, no interceptors, no metrics). Its CPU is what
// gRPC alone costs for the client side of the load, which any proxy that
// answers every request pays too.

type ceilingLease struct {
	pb.UnimplementedLeaseServer
	ttl int64
}

func (c ceilingLease) LeaseKeepAlive(s grpc.BidiStreamingServer[pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse]) error {
	hdr := &pb.ResponseHeader{ClusterId: 1, MemberId: 1, Revision: 1, RaftTerm: 2}
	for {
		r, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&pb.LeaseKeepAliveResponse{Header: hdr, ID: r.ID, TTL: c.ttl}); err != nil {
			return err
		}
	}
}

// ceilingKV answers the harness's readiness Range.
type ceilingKV struct{ pb.UnimplementedKVServer }

func (ceilingKV) Range(context.Context, *pb.RangeRequest) (*pb.RangeResponse, error) {
	return &pb.RangeResponse{Header: &pb.ResponseHeader{ClusterId: 1, MemberId: 1, Revision: 1, RaftTerm: 2}}, nil
}

// serveCeiling runs the ceiling server on addr until killed.
func serveCeiling(addr string, ttl int64) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	pb.RegisterLeaseServer(srv, ceilingLease{ttl: ttl})
	pb.RegisterKVServer(srv, ceilingKV{})
	fmt.Fprintln(os.Stderr, shell.ReadyMessage)
	return srv.Serve(lis)
}
