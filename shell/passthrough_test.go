package shell

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// TestHeaderRevision: the revision read from an encoded response is the
// one its header carries, whatever else the response holds (a Txn's
// nested responses have headers of their own), and 0 for bytes that are
// not a response with a header.
func TestHeaderRevision(t *testing.T) {
	enc := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	txn := &pb.TxnResponse{
		Header:    &pb.ResponseHeader{ClusterId: 7, MemberId: 9, Revision: 42, RaftTerm: 3},
		Succeeded: true,
		Responses: []*pb.ResponseOp{{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{
			Header: &pb.ResponseHeader{Revision: 41},
			Kvs:    []*mvccpb.KeyValue{{Key: []byte("k"), ModRevision: 40}},
		}}}},
	}
	// A header after the other fields, as another encoder may lay it out.
	late := protowire.AppendTag(enc(&pb.DeleteRangeResponse{Deleted: 2}), 1, protowire.BytesType)
	late = protowire.AppendBytes(late, enc(&pb.ResponseHeader{Revision: 1 << 40}))
	for _, c := range []struct {
		name string
		b    []byte
		want int64
	}{
		{"put", enc(&pb.PutResponse{Header: &pb.ResponseHeader{Revision: 5}, PrevKv: &mvccpb.KeyValue{ModRevision: 4}}), 5},
		{"txn", enc(txn), 42},
		{"header last", late, 1 << 40},
		{"no header", enc(&pb.PutResponse{}), 0},
		{"empty", nil, 0},
		{"truncated", enc(txn)[:5], 0},
		{"garbage", []byte{0xff, 0xff, 0xff}, 0},
	} {
		if got := headerRevision(c.b); got != c.want {
			t.Errorf("%s: revision %d, want %d", c.name, got, c.want)
		}
	}
}
