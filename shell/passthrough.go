package shell

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Writes that need no translation pass through undecoded.
//
// Without a namespace (and without the leasing KV or payload logging, which
// read the messages), a Put, DeleteRange or Txn is forwarded as the bytes
// the client sent, and etcd's answer goes back as the bytes etcd sent: the
// proxy neither decodes nor re-encodes either message, which a profile of
// Txn under load put at a tenth of the proxy's CPU. It reads one field of
// the answer, the header's revision, to raise the connection's floor as
// the decoded path does. The call goes to etcd through the same
// connection, interceptors and retry policy (clientv3's default for a call
// without options is the one its KV client gives these writes: resent only
// if it never left the proxy), so failover, the in-flight bookkeeping and
// errors are the decoded path's.

// rawMsg is a message kept as its encoding.
type rawMsg struct{ b []byte }

// passCodec is the codec of a pass-through call to etcd: it sends and
// receives rawMsg bytes as they are. It is named "proto", which they are,
// so etcd sees the content type any client sends.
type passCodec struct{}

func (passCodec) Name() string { return "proto" }

func (passCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return nil, errors.New("etcdproxy: pass-through codec given a decoded message")
	}
	return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
}

func (passCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return errors.New("etcdproxy: pass-through codec given a decoded message")
	}
	m.b = data.Materialize()
	return nil
}

var _ encoding.CodecV2 = passCodec{}

var passCall = grpc.ForceCodecV2(passCodec{})

// passthroughKV is the KV service with Put, DeleteRange and Txn passed
// through to conn (the connection to etcd); its other methods are kv's.
func passthroughKV(kv pb.KVServer, conn *grpc.ClientConn) (*grpc.ServiceDesc, pb.KVServer) {
	desc := pb.KV_ServiceDesc
	desc.Methods = append([]grpc.MethodDesc(nil), desc.Methods...)
	for i, m := range desc.Methods {
		switch method := "/" + desc.ServiceName + "/" + m.MethodName; method {
		case pb.KV_Put_FullMethodName, pb.KV_DeleteRange_FullMethodName, pb.KV_Txn_FullMethodName:
			desc.Methods[i].Handler = passHandler(method, conn)
		}
	}
	return &desc, kv
}

// passHandler is a gRPC method handler that forwards method's request
// bytes to etcd and returns etcd's response bytes.
func passHandler(method string, conn *grpc.ClientConn) grpc.MethodHandler {
	info := &grpc.UnaryServerInfo{FullMethod: method}
	invoke := func(ctx context.Context, req *rawMsg, opts ...grpc.CallOption) (*rawMsg, error) {
		resp := &rawMsg{}
		return resp, conn.Invoke(ctx, method, req, resp, append(opts, passCall)...)
	}
	call := func(ctx context.Context, req any) (any, error) {
		resp, err := forward(ctx, invoke, req.(*rawMsg))
		if err != nil {
			return nil, err
		}
		floorOf(ctx).raise(headerRevision(resp.b))
		return resp, nil
	}
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		req := &rawMsg{}
		if err := dec(req); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return call(ctx, req)
		}
		info := *info
		info.Server = srv
		return interceptor(ctx, req, &info, call)
	}
}

// headerRevision is the revision in the header (field 1; its field 3) of
// an encoded etcd response, 0 if it has none.
func headerRevision(b []byte) int64 {
	header := protoField(b, 1, protowire.BytesType)
	if header == nil {
		return 0
	}
	rev := protoField(header, 3, protowire.VarintType)
	if rev == nil {
		return 0
	}
	v, n := protowire.ConsumeVarint(rev)
	if n < 0 {
		return 0
	}
	return int64(v)
}

// protoField is the last occurrence of field num of type typ in the
// encoded message b (for a bytes field its contents, for a varint its
// encoding), nil if there is none or b is malformed.
func protoField(b []byte, num protowire.Number, typ protowire.Type) []byte {
	var found []byte
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil
		}
		b = b[l:]
		vl := protowire.ConsumeFieldValue(n, t, b)
		if vl < 0 {
			return nil
		}
		if n == num && t == typ {
			switch t {
			case protowire.BytesType:
				v, _ := protowire.ConsumeBytes(b)
				found = v
			default:
				found = b[:vl]
			}
		}
		b = b[vl:]
	}
	return found
}
