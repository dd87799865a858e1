package fuzz

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/etcdproxy/etcdproxy/internal/rawcodec"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// FuzzRequests checks the proxy's handling of every unary RPC of etcd's
// API against etcd itself. Each input is a sequence of calls (an RPC and
// the request's bytes, valid protobuf or not); each call goes through the
// proxy (in process, default configuration, read cache on) to one etcd
// member, and the same bytes go directly to a second member that has been
// given exactly the same calls in the same order. The two answers must be
// equal: the same gRPC code and message, or responses equal once what two
// members legitimately differ in is cleared (headers, lease IDs etcd
// chose, remaining TTLs, member lists, status and hashes, which are
// compared by code only). A panic, a hang or an answer of the proxy's own
// making fails the target.
//
// Calls that would stop the fuzzing from reaching anything (enabling
// auth, raising an alarm, changing membership, moving the leader,
// downgrading, defragmenting) are left out, and lease TTLs below an hour
// are raised to an hour on both sides, so that no lease expires, at a
// moment that differs between the two members, while the target runs.
func FuzzRequests(f *testing.F) {
	for _, seed := range requestSeeds() {
		f.Add(seed)
	}
	proxied := testutil.StartMember(f)
	direct := testutil.StartMember(f)
	p := testutil.StartProxyLogging(f, []string{proxied.ClientURL}, nil, zap.NewNop())
	viaProxy, viaDirect := testutil.Dial(f, p.Addr()), testutil.Dial(f, direct.ClientURL)
	f.Fuzz(func(t *testing.T, data []byte) {
		for i, c := range decodeCalls(data) {
			got := callRaw(viaProxy, c)
			want := callRaw(viaDirect, c)
			if !got.equal(want, c.rpc) {
				t.Fatalf("call %d, %s %s:\n proxy: %s\n  etcd: %s", i, c.rpc.method, describeRequest(c), got.describe(c.rpc), want.describe(c.rpc))
			}
		}
	})
}

// unaryRPC is one unary method of etcd's API as the target calls it.
type unaryRPC struct {
	method string
	req    proto.Message // a zero request, for decoding and describing
	resp   proto.Message // a zero response, for comparing
	// clear zeroes, in a decoded response, what two members answer
	// differently for the same history; nil compares the code only.
	clear func(protoreflect.Message)
	// adjust, if not nil, changes a decoded request the same way for both
	// sides (lease TTLs).
	adjust func(proto.Message)
}

func headerOnly(m protoreflect.Message) { clearFields(m, "header") }

var unaryRPCs = []unaryRPC{
	{"/etcdserverpb.KV/Range", &pb.RangeRequest{}, &pb.RangeResponse{}, headerOnly, nil},
	{"/etcdserverpb.KV/Put", &pb.PutRequest{}, &pb.PutResponse{}, headerOnly, nil},
	{"/etcdserverpb.KV/DeleteRange", &pb.DeleteRangeRequest{}, &pb.DeleteRangeResponse{}, headerOnly, nil},
	{"/etcdserverpb.KV/Txn", &pb.TxnRequest{}, &pb.TxnResponse{}, headerOnly, nil},
	{"/etcdserverpb.KV/Compact", &pb.CompactionRequest{}, &pb.CompactionResponse{}, headerOnly, nil},
	{"/etcdserverpb.Lease/LeaseGrant", &pb.LeaseGrantRequest{}, &pb.LeaseGrantResponse{},
		func(m protoreflect.Message) { clearFields(m, "header", "ID") }, longLease},
	{"/etcdserverpb.Lease/LeaseRevoke", &pb.LeaseRevokeRequest{}, &pb.LeaseRevokeResponse{}, headerOnly, nil},
	{"/etcdserverpb.Lease/LeaseTimeToLive", &pb.LeaseTimeToLiveRequest{}, &pb.LeaseTimeToLiveResponse{},
		func(m protoreflect.Message) {
			clearFields(m, "header", "TTL")
			// etcd lists a lease's keys in no particular order.
			slices.SortFunc(m.Interface().(*pb.LeaseTimeToLiveResponse).Keys, bytes.Compare)
		}, nil},
	{"/etcdserverpb.Lease/LeaseLeases", &pb.LeaseLeasesRequest{}, &pb.LeaseLeasesResponse{}, nil, nil},
	{"/etcdserverpb.Cluster/MemberList", &pb.MemberListRequest{}, &pb.MemberListResponse{}, nil, nil},
	{"/etcdserverpb.Maintenance/Status", &pb.StatusRequest{}, &pb.StatusResponse{}, nil, nil},
	{"/etcdserverpb.Maintenance/Hash", &pb.HashRequest{}, &pb.HashResponse{}, nil, nil},
	{"/etcdserverpb.Maintenance/HashKV", &pb.HashKVRequest{}, &pb.HashKVResponse{}, nil, nil},
	{"/etcdserverpb.Auth/AuthStatus", &pb.AuthStatusRequest{}, &pb.AuthStatusResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/Authenticate", &pb.AuthenticateRequest{}, &pb.AuthenticateResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/UserAdd", &pb.AuthUserAddRequest{}, &pb.AuthUserAddResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/UserGet", &pb.AuthUserGetRequest{}, &pb.AuthUserGetResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/UserList", &pb.AuthUserListRequest{}, &pb.AuthUserListResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/UserDelete", &pb.AuthUserDeleteRequest{}, &pb.AuthUserDeleteResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/UserGrantRole", &pb.AuthUserGrantRoleRequest{}, &pb.AuthUserGrantRoleResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/UserRevokeRole", &pb.AuthUserRevokeRoleRequest{}, &pb.AuthUserRevokeRoleResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/RoleAdd", &pb.AuthRoleAddRequest{}, &pb.AuthRoleAddResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/RoleGet", &pb.AuthRoleGetRequest{}, &pb.AuthRoleGetResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/RoleList", &pb.AuthRoleListRequest{}, &pb.AuthRoleListResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/RoleDelete", &pb.AuthRoleDeleteRequest{}, &pb.AuthRoleDeleteResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/RoleGrantPermission", &pb.AuthRoleGrantPermissionRequest{}, &pb.AuthRoleGrantPermissionResponse{}, headerOnly, nil},
	{"/etcdserverpb.Auth/RoleRevokePermission", &pb.AuthRoleRevokePermissionRequest{}, &pb.AuthRoleRevokePermissionResponse{}, headerOnly, nil},
}

// longLease raises a lease grant's TTL to at least an hour (etcd's upper
// limit and its refusal stay as they are).
func longLease(m proto.Message) {
	if r := m.(*pb.LeaseGrantRequest); r.TTL < 3600 {
		r.TTL = 3600
	}
}

// clearFields zeroes the fields named (by their protobuf names) in m and in
// every message nested in it.
func clearFields(m protoreflect.Message, names ...string) {
	fields := m.Descriptor().Fields()
	for _, n := range names {
		if fd := fields.ByName(protoreflect.Name(n)); fd != nil {
			m.Clear(fd)
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				clearFields(v.List().Get(i).Message(), names...)
			}
		case fd.Message() != nil && !fd.IsMap():
			clearFields(v.Message(), names...)
		}
		return true
	})
}

// rawCall is one call of an input: an RPC and the request's bytes.
type rawCall struct {
	rpc   unaryRPC
	bytes []byte
}

// decodeCalls reads an input as calls: a byte choosing the RPC, a byte
// giving the request's length, then the request's bytes; at most 16 calls.
// A request that decodes is adjusted (see unaryRPC.adjust) and encoded
// again; one that does not is sent as it is.
func decodeCalls(data []byte) []rawCall {
	var out []rawCall
	for len(data) >= 2 && len(out) < 16 {
		rpc := unaryRPCs[int(data[0])%len(unaryRPCs)]
		n := min(int(data[1]), len(data)-2)
		b := data[2 : 2+n]
		data = data[2+n:]
		if rpc.adjust != nil {
			req := rpc.req.ProtoReflect().New().Interface()
			if proto.Unmarshal(b, req) == nil {
				rpc.adjust(req)
				if enc, err := proto.Marshal(req); err == nil {
					b = enc
				}
			}
		}
		out = append(out, rawCall{rpc: rpc, bytes: b})
	}
	return out
}

func describeRequest(c rawCall) string {
	req := c.rpc.req.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(c.bytes, req); err != nil {
		return fmt.Sprintf("%x (not a request: %v)", c.bytes, err)
	}
	return "{" + prototext.MarshalOptions{}.Format(req) + "}"
}

// rawAnswer is what a call got: a status, and the response's bytes.
type rawAnswer struct {
	st   *status.Status
	resp []byte
}

func callRaw(cc *grpc.ClientConn, c rawCall) rawAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in, out := c.bytes, []byte(nil)
	err := cc.Invoke(ctx, c.rpc.method, &in, &out, grpc.ForceCodec(rawcodec.Codec{}))
	return rawAnswer{st: status.Convert(err), resp: out}
}

// decoded is the answer's response with what members differ in cleared.
func (a rawAnswer) decoded(rpc unaryRPC) (proto.Message, error) {
	m := rpc.resp.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(a.resp, m); err != nil {
		return nil, err
	}
	rpc.clear(m.ProtoReflect())
	return m, nil
}

func (a rawAnswer) equal(b rawAnswer, rpc unaryRPC) bool {
	if a.st.Code() != b.st.Code() || a.st.Message() != b.st.Message() {
		return false
	}
	if a.st.Code() != codes.OK || rpc.clear == nil {
		return true
	}
	ma, errA := a.decoded(rpc)
	mb, errB := b.decoded(rpc)
	return errA == nil && errB == nil && proto.Equal(ma, mb)
}

func (a rawAnswer) describe(rpc unaryRPC) string {
	if a.st.Code() != codes.OK {
		return fmt.Sprintf("%s: %s", a.st.Code(), a.st.Message())
	}
	if rpc.clear == nil {
		return "OK"
	}
	m, err := a.decoded(rpc)
	if err != nil {
		return fmt.Sprintf("OK, undecodable %x: %v", a.resp, err)
	}
	return "OK {" + prototext.MarshalOptions{}.Format(m) + "}"
}

// requestSeeds are inputs that reach the interesting paths at once: reads
// after writes (the read cache and the connection's floor), a lease
// revoked under a key that was read before, a compaction then reads
// around it, options of every kind, malformed bytes.
func requestSeeds() [][]byte {
	index := map[string]int{}
	for i, r := range unaryRPCs {
		index[r.method] = i
	}
	encode := func(calls ...any) []byte {
		var out []byte
		for i := 0; i < len(calls); i += 2 {
			var b []byte
			switch m := calls[i+1].(type) {
			case proto.Message:
				b, _ = proto.Marshal(m)
			case []byte:
				b = m
			}
			out = append(out, byte(index[calls[i].(string)]), byte(len(b)))
			out = append(out, b...)
		}
		return out
	}
	const (
		rng    = "/etcdserverpb.KV/Range"
		put    = "/etcdserverpb.KV/Put"
		del    = "/etcdserverpb.KV/DeleteRange"
		txn    = "/etcdserverpb.KV/Txn"
		cmp    = "/etcdserverpb.KV/Compact"
		grant  = "/etcdserverpb.Lease/LeaseGrant"
		revoke = "/etcdserverpb.Lease/LeaseRevoke"
		ttl    = "/etcdserverpb.Lease/LeaseTimeToLive"
	)
	k := []byte("k")
	return [][]byte{
		encode(put, &pb.PutRequest{Key: k, Value: []byte("v")}, rng, &pb.RangeRequest{Key: k, Serializable: true},
			put, &pb.PutRequest{Key: k, Value: []byte("w")}, rng, &pb.RangeRequest{Key: k, Serializable: true}, rng, &pb.RangeRequest{Key: k}),
		encode(grant, &pb.LeaseGrantRequest{ID: 77, TTL: 5}, put, &pb.PutRequest{Key: []byte("l"), Lease: 77},
			rng, &pb.RangeRequest{Key: []byte("l"), Serializable: true}, ttl, &pb.LeaseTimeToLiveRequest{ID: 77, Keys: true},
			revoke, &pb.LeaseRevokeRequest{ID: 77}, rng, &pb.RangeRequest{Key: []byte("l"), Serializable: true}),
		encode(put, &pb.PutRequest{Key: []byte("a"), Value: []byte("1")}, put, &pb.PutRequest{Key: []byte("b"), Value: []byte("2")},
			rng, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0}, Serializable: true, Limit: 1, SortOrder: pb.RangeRequest_DESCEND},
			del, &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), PrevKv: true},
			rng, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0}, Serializable: true, CountOnly: true}),
		encode(txn, &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: k, Target: pb.Compare_VERSION, Result: pb.Compare_GREATER}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: []byte("t"), PrevKv: true}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k}}}},
		}, rng, &pb.RangeRequest{Key: k, Serializable: true, KeysOnly: true}),
		encode(put, &pb.PutRequest{Key: []byte("c"), Value: []byte("1")}, cmp, &pb.CompactionRequest{Revision: 2},
			rng, &pb.RangeRequest{Key: []byte("c"), Revision: 1}, rng, &pb.RangeRequest{Key: []byte("c"), Revision: 1 << 40},
			cmp, &pb.CompactionRequest{Revision: 1 << 40}),
		encode(rng, []byte{0xff, 0xff, 0xff, 0x0f, 0x0a}, grant, &pb.LeaseGrantRequest{TTL: 1 << 40},
			"/etcdserverpb.Auth/Authenticate", &pb.AuthenticateRequest{Name: "root", Password: "x"},
			"/etcdserverpb.Auth/RoleAdd", &pb.AuthRoleAddRequest{Name: "r"}, "/etcdserverpb.Auth/RoleGet", &pb.AuthRoleGetRequest{Role: "r"}),
	}
}
