package shell

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// TestWatchCodecEncodesEventsOnce: responses sharing one slice of events
// decode to exactly what gRPC's own codec would give, and the events are
// encoded once.
func TestWatchCodecEncodesEventsOnce(t *testing.T) {
	c := newWatchCodec()
	evs := []*mvccpb.Event{
		{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), Value: []byte("1"), ModRevision: 5, CreateRevision: 5, Version: 1}},
		{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("b"), ModRevision: 5}, PrevKv: &mvccpb.KeyValue{Key: []byte("b"), Value: []byte("x"), ModRevision: 3}},
	}
	h := &pb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 5, RaftTerm: 3}
	for _, id := range []int64{0, 1, 7, -1} {
		want := &pb.WatchResponse{Header: h, WatchId: id, Events: evs[:2], Fragment: id == 7}
		data, err := c.Marshal(want)
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
	}
	if n := len(c.cache); n != 1 {
		t.Errorf("%d cache entries for one slice of events, want 1", n)
	}
	// A different slice (here: a sub-slice) is a different entry.
	if _, err := c.Marshal(&pb.WatchResponse{Events: evs[1:]}); err != nil {
		t.Fatal(err)
	}
	if n := len(c.cache); n != 2 {
		t.Errorf("%d cache entries, want 2", n)
	}
}
