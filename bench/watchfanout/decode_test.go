package main

import (
	"math/rand/v2"
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// TestWatchRespDecode: the tool's decoder reads what proto.Unmarshal reads
// from the same bytes (IDs, flags, cancel reason, compact revision and
// each event's ModRevision, not its previous key-value's), whole or
// split across buffers as gRPC may hand it over, and refuses bytes cut
// short.
func TestWatchRespDecode(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	c := watchCodec{}
	r := &watchResp{}
	for i := range 500 {
		want := &pb.WatchResponse{
			WatchId:         rng.Int64N(5) - 1,
			Created:         rng.IntN(4) == 0,
			Canceled:        rng.IntN(8) == 0,
			CompactRevision: rng.Int64N(3) * 1000,
			Fragment:        rng.IntN(8) == 0,
		}
		if rng.IntN(2) == 0 {
			want.Header = &pb.ResponseHeader{ClusterId: rng.Uint64(), MemberId: 2, Revision: rng.Int64N(1 << 40), RaftTerm: 7}
		}
		if want.Canceled {
			want.CancelReason = "mvcc: required revision has been compacted"
		}
		for range rng.IntN(6) {
			ev := &mvccpb.Event{Type: mvccpb.Event_EventType(rng.IntN(2)),
				Kv: &mvccpb.KeyValue{Key: []byte("k"), Value: make([]byte, rng.IntN(300)), ModRevision: rng.Int64N(1 << 33), CreateRevision: 5, Version: 3}}
			if rng.IntN(3) == 0 {
				ev.PrevKv = &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 4}
			}
			want.Events = append(want.Events, ev)
		}
		b, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		data := mem.BufferSlice{mem.SliceBuffer(b)}
		if cut := rng.IntN(len(b) + 1); i%2 == 1 && cut > 0 && cut < len(b) {
			data = mem.BufferSlice{mem.SliceBuffer(b[:cut]), mem.SliceBuffer(b[cut:])}
		}
		if err := c.Unmarshal(data, r); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		var revs []int64
		for _, ev := range want.Events {
			revs = append(revs, ev.Kv.ModRevision)
		}
		if r.WatchId != want.WatchId || r.Created != want.Created || r.Canceled != want.Canceled ||
			r.CompactRevision != want.CompactRevision || r.CancelReason != want.CancelReason || !slices.Equal(r.Revs, revs) {
			t.Fatalf("response %d: decoded %+v, want %v", i, r, want)
		}
		if len(b) > 1 {
			if err := r.decode(b[:len(b)-1]); err == nil && len(want.Events) > 0 {
				t.Fatalf("response %d: no error for bytes cut short", i)
			}
		}
	}
}
