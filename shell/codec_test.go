package shell

import (
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// TestWatchCodecEncodesEventsOnce: responses sharing one run of events
// decode to exactly what gRPC's own codec gives for the same response, and
// the events are encoded once for all of them.
func TestWatchCodecEncodesEventsOnce(t *testing.T) {
	c := newWatchCodec()
	evs := []*mvccpb.Event{
		{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), Value: []byte("1"), ModRevision: 5, CreateRevision: 5, Version: 1}},
		{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("b"), ModRevision: 5}, PrevKv: &mvccpb.KeyValue{Key: []byte("b"), Value: []byte("x"), ModRevision: 3}},
	}
	shared := &sharedEncoding{events: evs}
	h := &pb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 5, RaftTerm: 3}
	var first []byte
	for _, id := range []int64{0, 1, 7, -1} {
		want := &pb.WatchResponse{Header: h, WatchId: id, Events: evs, Fragment: id == 7}
		data, err := c.Marshal(&outMsg{resp: want, shared: shared})
		if err != nil {
			t.Fatal(err)
		}
		got := &pb.WatchResponse{}
		if err := proto.Unmarshal(data.Materialize(), got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("watch %d: decoded %v, want %v", id, got, want)
		}
		plain, _ := c.proto.Marshal(want)
		if len(plain.Materialize()) != len(data.Materialize()) {
			t.Errorf("watch %d: %d bytes, gRPC's codec gives %d", id, len(data.Materialize()), len(plain.Materialize()))
		}
		data.Free()
		b, _ := shared.encoded()
		if first == nil {
			first = b
		} else if &b[0] != &first[0] {
			t.Errorf("watch %d: the events were encoded again", id)
		}
	}
	// A response whose events are its own, and any other message, are
	// gRPC's own encoding.
	r := &pb.WatchResponse{WatchId: 3, Events: evs[1:]}
	plain, _ := proto.Marshal(r)
	for _, v := range []any{&outMsg{resp: r}, r} {
		data, err := c.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if string(data.Materialize()) != string(plain) {
			t.Errorf("%T encoded differently from proto.Marshal", v)
		}
	}
}

// TestWatchHeadEncoding: the hand-written encoding of a watch response's
// head is byte for byte proto.Marshal's, for heads with every field set,
// none, negative IDs and revisions, and an empty header.
func TestWatchHeadEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(vals ...int64) int64 { return vals[rng.IntN(len(vals))] }
	heads := []*pb.WatchResponse{
		{},
		{Header: &pb.ResponseHeader{}},
		{WatchId: -1, Header: &pb.ResponseHeader{Revision: 9}},
		{Header: &pb.ResponseHeader{ClusterId: 1<<64 - 1, MemberId: 1 << 63, Revision: 1<<63 - 1, RaftTerm: 1}, WatchId: 1<<63 - 1,
			Created: true, Canceled: true, CompactRevision: 3, CancelReason: "mvcc: required revision has been compacted", Fragment: true},
	}
	for range 2000 {
		r := &pb.WatchResponse{
			WatchId: pick(0, 1, -1, 127, 128, 1<<40, -1<<40), Created: rng.IntN(2) == 0, Canceled: rng.IntN(2) == 0,
			CompactRevision: pick(0, 5, 1<<33, -7), Fragment: rng.IntN(2) == 0,
		}
		if rng.IntN(3) == 0 {
			r.CancelReason = string(make([]byte, rng.IntN(300)))
		}
		if rng.IntN(4) != 0 {
			r.Header = &pb.ResponseHeader{ClusterId: rng.Uint64() >> rng.IntN(64), MemberId: rng.Uint64() >> rng.IntN(64),
				Revision: pick(0, 1, 1<<20, 1<<62, -3), RaftTerm: uint64(pick(0, 2, 1<<35))}
		}
		heads = append(heads, r)
	}
	for _, r := range heads {
		want, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendWatchHead(nil, r); string(got) != string(want) {
			t.Fatalf("head %v:\n got %x\nwant %x", r, got, want)
		}
	}
}
