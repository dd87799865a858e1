package shell

import (
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// TestMergeQueuedResponses: a sender that takes several batches at once
// writes each watcher's runs of shared events as one response, with the
// later header, and decoding gives every event in order; nothing moves
// across a created, progress or filtered response, and the bytes counted
// for the node add up to what it handed out.
func TestMergeQueuedResponses(t *testing.T) {
	enc := map[int64]*sharedEncoding{}
	events := func(rev int64) *sharedEncoding {
		if enc[rev] == nil {
			enc[rev] = &sharedEncoding{events: []*mvccpb.Event{{Kv: &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), ModRevision: rev}}}}
		}
		return enc[rev]
	}
	// Watcher 1's responses come as the node makes them for a run of
	// shared events (no response, its watch ID and header); the others'
	// as whole responses.
	ev := func(w, rev int64) outMsg {
		e := events(rev)
		r := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: rev}, WatchId: w, Events: e.events}
		if w == 1 {
			return outMsg{shared: e, id: w, header: r.Header, size: proto.Size(r)}
		}
		return outMsg{resp: r, shared: e, size: proto.Size(r)}
	}
	other := func(r *pb.WatchResponse) outMsg { return outMsg{resp: r, size: proto.Size(r)} }
	progress := other(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 6}, WatchId: -1})
	created := other(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 7}, WatchId: 3, Created: true})
	filtered := other(&pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 8}, WatchId: 2, Events: events(8).events})
	batches := [][]outMsg{
		{ev(1, 5), ev(2, 5)},
		{ev(1, 6), progress, ev(2, 6)},
		{ev(1, 7), ev(2, 7), created, ev(1, 8), filtered, ev(1, 9)},
	}
	want := []string{
		"w1 rev=6 [5 6]", "w2 rev=5 [5]", "w-1 rev=6 []",
		"w2 rev=7 [6 7]", "w1 rev=7 [7]", "w3 rev=7 created []",
		"w1 rev=8 [8]", "w2 rev=8 [8]", "w1 rev=9 [9]",
	}
	total := 0
	for _, ms := range batches {
		for _, m := range ms {
			total += m.size
		}
	}
	var g merger
	c := newWatchCodec()
	for round := range 2 { // the merger's state is reused
		var got []string
		counted := 0
		for _, m := range g.merge(batches) {
			data, err := c.Marshal(&m)
			if err != nil {
				t.Fatal(err)
			}
			r := &pb.WatchResponse{}
			if err := proto.Unmarshal(data.Materialize(), r); err != nil {
				t.Fatal(err)
			}
			if logged := m.response(); !proto.Equal(logged, r) {
				t.Errorf("round %d: logged as %v, sent %v", round, logged, r)
			}
			got = append(got, describe(r))
			counted += m.size
		}
		if strings.Join(got, ", ") != strings.Join(want, ", ") {
			t.Errorf("round %d: sent\n %v\nwant\n %v", round, got, want)
		}
		if counted != total {
			t.Errorf("round %d: bytes counted %d, handed out %d", round, counted, total)
		}
	}

	// A merged response stays within mergeBytes.
	var big []outMsg
	for rev := int64(10); rev < 10000; rev++ {
		big = append(big, ev(1, rev))
	}
	ms := g.merge([][]outMsg{big})
	n := 0
	for _, m := range ms {
		if m.size > mergeBytes {
			t.Fatalf("a merged response of %d bytes", m.size)
		}
		n += 1 + len(m.more)
	}
	if n != len(big) || len(ms) < 2 {
		t.Errorf("%d responses merged into %d carrying %d", len(big), len(ms), n)
	}
}

func describe(r *pb.WatchResponse) string {
	var revs []string
	for _, e := range r.Events {
		revs = append(revs, fmt.Sprint(e.Kv.ModRevision))
	}
	s := fmt.Sprintf("w%d rev=%d", r.WatchId, r.Header.GetRevision())
	if r.Created {
		s += " created"
	}
	return s + " [" + strings.Join(revs, " ") + "]"
}
