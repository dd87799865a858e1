package node_test

import (
	"bytes"
	"slices"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

var t0 = time.Unix(1_000_000, 0)

func create(s port.StreamID, key string) node.Input {
	return node.WatchCreate{Stream: s, Req: &pb.WatchCreateRequest{Key: []byte(key)}}
}

func hdr(rev int64) *pb.ResponseHeader { return &pb.ResponseHeader{Revision: rev} }

// take returns the node's Ready and advances past it, keeping copies of
// its slices (the node reuses and clears them after Advance).
func take(n *node.Node) port.Ready {
	rd := n.Ready()
	rd.Sends, rd.Upstream, rd.Fetches = slices.Clone(rd.Sends), slices.Clone(rd.Upstream), slices.Clone(rd.Fetches)
	rd.Lanes, rd.LaneEnds, rd.Ends = slices.Clone(rd.Lanes), slices.Clone(rd.LaneEnds), slices.Clone(rd.Ends)
	rd.Answers, rd.LeaseChecks = slices.Clone(rd.Answers), slices.Clone(rd.LeaseChecks)
	rd.Probes, rd.Switches = slices.Clone(rd.Probes), slices.Clone(rd.Switches)
	n.Advance()
	return rd
}

// Ready hands out what is pending and changes nothing; Advance acknowledges
// it, and only then is the next step's output separate.
func TestReadyChangesNothingAdvanceAcknowledges(t *testing.T) {
	n := node.New(node.Config{}, t0)
	if n.HasReady() {
		t.Fatalf("a new node has something to do: %+v", n.Ready())
	}
	n.Step(node.OpenStream{Stream: 1})
	n.Step(create(1, "a"))
	if !n.HasReady() {
		t.Fatal("a create asks for nothing")
	}
	first, second := n.Ready(), n.Ready()
	if len(first.Fetches) != 1 || !sameReady(first, second) {
		t.Fatalf("Ready twice: %+v then %+v", first, second)
	}
	// Until Advance, another plain create joins the same fetch.
	n.Step(create(1, "b"))
	if rd := n.Ready(); len(rd.Fetches) != 1 || rd.Fetches[0].ID != first.Fetches[0].ID {
		t.Fatalf("fetches before Advance = %+v, want the one fetch", rd.Fetches)
	}
	n.Advance()
	if n.HasReady() {
		t.Fatalf("after Advance: %+v", n.Ready())
	}
	// After Advance the fetch is the shell's: a new create needs a new one.
	n.Step(create(1, "c"))
	rd := n.Ready()
	if len(rd.Fetches) != 1 || rd.Fetches[0].ID == first.Fetches[0].ID {
		t.Fatalf("fetches after Advance = %+v, want a new one", rd.Fetches)
	}
	if !rd.Fetches[0].For.Has(port.Watch) {
		t.Errorf("fetch %v is not tagged with the watch machine", rd.Fetches[0])
	}
	n.Advance()

	// Answers go to the machine that asked: the creates are answered.
	n.Step(node.Fetched{ID: first.Fetches[0].ID, Result: port.FetchResult{Header: hdr(7)}})
	n.Step(node.Fetched{ID: rd.Fetches[0].ID, Result: port.FetchResult{Header: hdr(7)}})
	out := n.Ready()
	if len(out.Sends) != 3 || len(out.Upstream) != 3 {
		t.Fatalf("after the answers: %d sends, %d upstream requests; want 3 created, 3 upstream creates", len(out.Sends), len(out.Upstream))
	}
	for i, s := range out.Sends {
		if !s.Response().Created || s.Response().WatchId != int64(i) || s.Size != proto.Size(s.Response()) {
			t.Errorf("send %d = %v (size %d)", i, s, s.Size)
		}
	}
}

func sameReady(a, b port.Ready) bool {
	var x, y bytes.Buffer
	for _, r := range []struct {
		rd port.Ready
		b  *bytes.Buffer
	}{{a, &x}, {b, &y}} {
		for _, s := range r.rd.Sends {
			r.b.WriteString(s.String() + "\n")
		}
		for _, u := range r.rd.Upstream {
			r.b.WriteString(u.String() + "\n")
		}
		for _, f := range r.rd.Fetches {
			r.b.WriteString(f.String() + "\n")
		}
	}
	return x.String() == y.String()
}

// A fetch that fails for a transport reason is tried again after the retry
// interval, under the same ID, without the machines hearing of it; etcd's
// own verdicts reach them.
func TestFetchRetriedOnTransportError(t *testing.T) {
	n := node.New(node.Config{Port: port.Config{RetryInterval: time.Second}}, t0)
	n.Step(node.OpenStream{Stream: 1})
	n.Step(create(1, "a"))
	f := n.Ready().Fetches[0]
	n.Advance()
	n.Step(node.Fetched{ID: f.ID, Result: port.FetchResult{Err: status.Error(codes.Unavailable, "no member")}})
	if n.HasReady() {
		t.Fatalf("a transport error reached the client: %+v", n.Ready())
	}
	n.Tick(t0.Add(999 * time.Millisecond))
	if n.HasReady() {
		t.Fatalf("retried before the interval: %+v", n.Ready())
	}
	n.Tick(t0.Add(time.Second))
	rd := n.Ready()
	if len(rd.Fetches) != 1 || rd.Fetches[0].ID != f.ID {
		t.Fatalf("fetches after the interval = %+v, want %v again", rd.Fetches, f)
	}
	n.Advance()
	if g := n.Gauges(); g.Flow.PendingFetches != 1 {
		t.Errorf("pending fetches = %d, want 1", g.Flow.PendingFetches)
	}
	denied := status.Error(codes.PermissionDenied, "etcdserver: permission denied")
	n.Step(node.Fetched{ID: f.ID, Result: port.FetchResult{Err: denied}})
	rd = n.Ready()
	if len(rd.Sends) != 1 || !rd.Sends[0].Response().Canceled || rd.Sends[0].Response().CancelReason != denied.Error() {
		t.Fatalf("after etcd's refusal: %+v, want the create refused with etcd's error", rd.Sends)
	}
	if g := n.Gauges(); g.Flow.PendingFetches != 0 {
		t.Errorf("pending fetches = %d, want 0", g.Flow.PendingFetches)
	}
	// A late answer for a fetch that is done is ignored.
	n.Advance()
	n.Step(node.Fetched{ID: f.ID, Result: port.FetchResult{Header: hdr(3)}})
	if n.HasReady() {
		t.Errorf("a stale answer did something: %+v", n.Ready())
	}
}

// Flow control is the node's: a stream over its bound gets nothing more
// until Written reports it drained below half, and then it catches up.
func TestFlowControlHoldsAndResumes(t *testing.T) {
	n := node.New(node.Config{Port: port.Config{StreamBufferBytes: 100}}, t0)
	n.Step(node.OpenStream{Stream: 1})
	n.Step(create(1, "a"))
	f := n.Ready().Fetches[0]
	n.Advance()
	n.Step(node.Fetched{ID: f.ID, Result: port.FetchResult{Header: hdr(1)}})
	up := n.Ready().Upstream[0].Watch.GetCreateRequest().WatchId
	queued := 0
	for _, s := range n.Ready().Sends {
		queued += s.Size
	}
	n.Advance()
	var sizes []int
	for rev := int64(2); rev <= 9; rev++ {
		n.Step(node.UpstreamResponse{Upstream: port.WatchShared, Watch: &pb.WatchResponse{Header: hdr(rev), WatchId: up,
			Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), Value: []byte("0123456789"), ModRevision: rev}}}}})
		for _, s := range n.Ready().Sends {
			sizes = append(sizes, s.Size)
			queued += s.Size
		}
		n.Advance()
	}
	if g := n.Gauges(); g.Flow.HeldStreams != 1 || g.Flow.QueuedBytes != queued {
		t.Fatalf("gauges = %+v, want the stream held with %d bytes queued", g, queued)
	}
	if queued > 100+sizes[len(sizes)-1] || len(sizes) == 8 {
		t.Fatalf("%d responses, %d bytes handed out for a bound of 100", len(sizes), queued)
	}
	if st := n.Stats(); st.Holds != 1 {
		t.Errorf("holds = %d, want 1", st.Holds)
	}
	// Written below half the bound: the held events follow.
	n.Step(node.Written{Stream: 1, Bytes: queued})
	rd := n.Ready()
	got := len(sizes)
	for _, s := range rd.Sends {
		for range s.Response().Events {
			got++
		}
	}
	if got != 8 {
		t.Errorf("events delivered after the stream drained: %d in all, want 8", got)
	}
}

// Every input prints as something a reader can follow.
func TestInputsPrint(t *testing.T) {
	ins := []node.Input{
		node.Tick{Now: t0}, node.OpenStream{Stream: 1, Token: "secret"}, node.CloseStream{Stream: 1},
		create(1, "a"), node.WatchCancel{Stream: 1, WatchID: 3}, node.WatchProgress{Stream: 1},
		node.Written{Stream: 1, Bytes: 10}, node.UpstreamResponse{Upstream: port.WatchShared, Watch: &pb.WatchResponse{WatchId: 2}},
		node.UpstreamLost{Upstream: port.WatchCatchUp}, node.Fetched{ID: 4, Result: port.FetchResult{Header: hdr(9)}},
	}
	seen := map[string]bool{}
	for _, in := range ins {
		s := in.String()
		if s == "" || seen[s] || bytes.Contains([]byte(s), []byte("secret")) {
			t.Errorf("%#v prints as %q", in, s)
		}
		seen[s] = true
	}
}

// The proxy-wide bound: while all streams together hold more than
// TotalBufferBytes, a stream with more than the floor queued (half its own
// bound here) is held although under its own bound, and a stream that
// drains as it is sent to is never held. The held stream resumes once it
// drains, and catches up.
func TestFlowControlTotalBound(t *testing.T) {
	n := node.New(node.Config{Port: port.Config{StreamBufferBytes: 400, TotalBufferBytes: 300}}, t0)
	n.Step(node.OpenStream{Stream: 1})
	n.Step(node.OpenStream{Stream: 2})
	n.Step(create(1, "a"))
	n.Step(create(2, "a"))
	f := n.Ready().Fetches[0]
	n.Advance()
	n.Step(node.Fetched{ID: f.ID, Result: port.FetchResult{Header: hdr(1)}})
	up := n.Ready().Upstream[0].Watch.GetCreateRequest().WatchId
	n.Advance()
	n.Step(node.Written{Stream: 1, Bytes: 1 << 20}) // the created answers
	n.Step(node.Written{Stream: 2, Bytes: 1 << 20})
	n.Advance()
	events := map[port.StreamID]int{}
	queued1, sent1 := 0, 0
	for rev := int64(2); rev <= 21; rev++ {
		n.Step(node.UpstreamResponse{Upstream: port.WatchShared, Watch: &pb.WatchResponse{Header: hdr(rev), WatchId: up,
			Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), Value: []byte("0123456789"), ModRevision: rev}}}}})
		written := 0
		for _, s := range n.Ready().Sends {
			events[s.Stream] += len(s.Response().Events)
			if s.Stream == 1 {
				queued1 += s.Size
				sent1++
			} else {
				written += s.Size
			}
		}
		n.Advance()
		n.Step(node.Written{Stream: 2, Bytes: written}) // stream 2 keeps up
		n.Advance()
	}
	st := n.Stats()
	if events[2] != 20 {
		t.Fatalf("the stream that keeps up got %d of 20 events", events[2])
	}
	if st.Holds != 1 || st.TotalHolds != 1 {
		t.Fatalf("holds = %d, for the total bound %d; want 1 and 1 (the stalled stream)", st.Holds, st.TotalHolds)
	}
	if g := n.Gauges(); g.Flow.HeldStreams != 1 || queued1 >= 400 || queued1 <= 200 {
		t.Fatalf("the stalled stream has %d bytes queued in %d responses (held streams %d): want it held above the floor 200 and below its own bound 400", queued1, sent1, g.Flow.HeldStreams)
	}
	// It drains: it resumes and catches up on every event.
	n.Step(node.Written{Stream: 1, Bytes: queued1})
	for _, s := range n.Ready().Sends {
		events[s.Stream] += len(s.Response().Events)
	}
	n.Advance()
	if events[1] != 20 {
		t.Fatalf("the stalled stream, drained, got %d of 20 events", events[1])
	}
}
