package node_test

import (
	"slices"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// Watchers of one auth identity share groups and a lane of upstream
// streams of their own; another identity's watchers on the same key get
// another lane, and streams without a token the default one. Events,
// losses and ends stay within their lane, and a lane whose streams have
// all closed is handed back to the shell.
func TestLanesPerIdentity(t *testing.T) {
	n := node.New(node.Config{}, t0)
	alice, bob := port.LaneOf(1), port.LaneOf(2)
	n.Step(node.OpenStream{Stream: 1, Token: "ta", Identity: "alice"})
	n.Step(node.OpenStream{Stream: 2, Token: "tb", Identity: "bob"})
	n.Step(node.OpenStream{Stream: 3})
	n.Step(node.OpenStream{Stream: 4, Token: "ta2", Identity: "alice"})
	rd := n.Ready()
	if len(rd.Lanes) != 2 || rd.Lanes[0] != (port.LaneStart{Lane: alice, Token: "ta"}) || rd.Lanes[1] != (port.LaneStart{Lane: bob, Token: "tb"}) {
		t.Fatalf("lanes started: %v, want alice's with her first token, then bob's", rd.Lanes)
	}
	n.Advance()
	for s := port.StreamID(1); s <= 4; s++ {
		n.Step(create(s, "k"))
	}
	rd = take(n)
	for _, f := range rd.Fetches {
		n.Step(node.Fetched{ID: f.ID, Result: port.FetchResult{Header: hdr(5)}})
	}
	rd = take(n)
	creates := map[port.UpstreamID]int64{}
	for _, u := range rd.Upstream {
		if c := u.Watch.GetCreateRequest(); c != nil {
			if _, dup := creates[u.Upstream]; dup {
				t.Fatalf("two upstream creates on %v: %v", u.Upstream, rd.Upstream)
			}
			creates[u.Upstream] = c.WatchId
		}
	}
	if len(creates) != 3 {
		t.Fatalf("upstream creates %v, want one on each of the default, alice's and bob's lanes", rd.Upstream)
	}
	for _, u := range []port.UpstreamID{port.WatchShared, alice.Shared, bob.Shared} {
		if _, ok := creates[u]; !ok {
			t.Fatalf("no create on %v: %v", u, rd.Upstream)
		}
	}

	// An event on alice's lane reaches her two streams only.
	n.Step(node.UpstreamResponse{Upstream: alice.Shared, Watch: &pb.WatchResponse{Header: hdr(5), WatchId: creates[alice.Shared], Created: true}})
	n.Step(node.UpstreamResponse{Upstream: alice.Shared, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: creates[alice.Shared],
		Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 6}}}}})
	got := map[port.StreamID]int{}
	for _, s := range n.Ready().Sends {
		got[s.Stream] += len(s.Response().GetEvents())
	}
	n.Advance()
	if got[1] != 1 || got[4] != 1 || got[2] != 0 || got[3] != 0 {
		t.Fatalf("events by stream after one on alice's lane: %v", got)
	}

	// Losing bob's shared stream re-creates his watch there, and nothing
	// else.
	n.Step(node.UpstreamLost{Upstream: bob.Shared})
	rd = take(n)
	for _, u := range rd.Upstream {
		if u.Upstream != bob.Shared {
			t.Fatalf("after bob's lane broke: %v", rd.Upstream)
		}
	}
	if len(rd.Upstream) == 0 {
		t.Fatal("bob's watch not re-created after his lane broke")
	}
	// etcd refuses the re-create for bob's token (it lost it in a
	// restart): bob's stream ends with Unavailable, so that his client
	// comes back with a fresh token, and his lane ends.
	re := rd.Upstream[0].Watch.GetCreateRequest()
	n.Step(node.UpstreamResponse{Upstream: bob.Shared, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: re.WatchId, Created: true, Canceled: true,
		CancelReason: rpctypes.ErrGRPCInvalidAuthToken.Error()}})
	rd = n.Ready()
	if len(rd.Ends) != 1 || rd.Ends[0].Stream != 2 || rd.Ends[0].Err != node.ErrLaneTokenRefused || len(rd.LaneEnds) != 1 || rd.LaneEnds[0].Lane != bob {
		t.Fatalf("after etcd refused bob's token: ends %v, lane ends %v", rd.Ends, rd.LaneEnds)
	}
	n.Advance()

	// Alice's streams close: her lane ends, once.
	n.Step(node.CloseStream{Stream: 1})
	if rd := n.Ready(); len(rd.LaneEnds) != 0 {
		t.Fatalf("alice's lane ended with a stream of hers open: %v", rd.LaneEnds)
	}
	n.Step(node.CloseStream{Stream: 4})
	rd = take(n)
	if len(rd.LaneEnds) != 1 || rd.LaneEnds[0].Lane != alice {
		t.Fatalf("after alice's last stream closed: lane ends %v", rd.LaneEnds)
	}
	// A new stream of hers gets a new lane: IDs are not reused.
	n.Step(node.OpenStream{Stream: 5, Token: "ta3", Identity: "alice"})
	if rd := n.Ready(); len(rd.Lanes) != 1 || rd.Lanes[0].Lane != port.LaneOf(3) {
		t.Fatalf("alice again: %v, want lane 3", rd.Lanes)
	}
	if st := n.Stats().Watch; st.EventsReceived != 1 || st.Watchers != 1 {
		t.Fatalf("stats across lanes %+v: want the ended lane's event counted and the default stream's watcher", st)
	}
}

// etcd answers a create it refuses (the stream's token may no longer
// watch the range, after a revoke) without the watch's ID; creates are
// answered in order, so the refusal ends the oldest create not answered:
// its watchers get etcd's reason, and the others go on.
func TestRefusedRecreateEndsItsWatchers(t *testing.T) {
	n := node.New(node.Config{}, t0)
	lane := port.LaneOf(1)
	n.Step(node.OpenStream{Stream: 1, Token: "t", Identity: "alice"})
	n.Step(create(1, "a"))
	n.Step(create(1, "b"))
	rd := take(n)
	for _, f := range rd.Fetches {
		n.Step(node.Fetched{ID: f.ID, Result: port.FetchResult{Header: hdr(5)}})
	}
	// Both groups are opened at once; the creates are answered once etcd
	// has accepted them.
	rd = n.Ready()
	if len(rd.Sends) != 0 || len(rd.Upstream) != 2 {
		t.Fatalf("before etcd accepted the groups: sends %v, upstream %v; want two creates upstream and nothing to the client", rd.Sends, rd.Upstream)
	}
	ups := slices.Clone(rd.Upstream)
	n.Advance()
	for _, u := range ups {
		n.Step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(5), WatchId: u.Watch.GetCreateRequest().WatchId, Created: true}})
	}
	if rd = n.Ready(); len(rd.Sends) != 2 || !rd.Sends[0].Response().Created || !rd.Sends[1].Response().Created {
		t.Fatalf("after etcd accepted the groups: %v, want both creates answered", rd.Sends)
	}
	n.Advance()
	n.Step(node.UpstreamLost{Upstream: lane.Shared})
	rd = take(n)
	var ids []int64
	for _, u := range rd.Upstream {
		if c := u.Watch.GetCreateRequest(); c != nil {
			ids = append(ids, c.WatchId)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("re-creates after the loss: %v", rd.Upstream)
	}
	denied := rpctypes.ErrGRPCPermissionDenied.Error()
	n.Step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: -1, Created: true, Canceled: true, CancelReason: denied}})
	n.Step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: ids[1], Created: true}})
	rd = n.Ready()
	var cancels []*pb.WatchResponse
	for _, s := range rd.Sends {
		if s.Response().GetCanceled() {
			cancels = append(cancels, s.Response())
		}
	}
	if len(cancels) != 1 || cancels[0].CancelReason != denied || len(rd.Ends) != 0 {
		t.Fatalf("after etcd refused the first re-create: cancels %v, ends %v; want one watcher cancelled with etcd's reason", cancels, rd.Ends)
	}
}

// On a lane with a token, a create that needs a new upstream watch is
// answered only once etcd has accepted that watch: etcd checks the lane's
// token again there, and a permission revoked after the revision fetch is
// the create's refusal, not the end of a watch the client was told etcd
// had created. A create behind the group's window gets a catch-up watch of
// its own (no rewind: that would have etcd check the group's watchers
// again), and is answered once etcd accepts it.
func TestLaneCreateAnsweredOnceEtcdAcceptsItsWatch(t *testing.T) {
	n := node.New(node.Config{}, t0)
	lane := port.LaneOf(1)
	n.Step(node.OpenStream{Stream: 1, Token: "t", Identity: "alice"})
	n.Advance()
	step := func(in ...node.Input) port.Ready {
		t.Helper()
		for _, i := range in {
			n.Step(i)
		}
		rd := n.Ready()
		// Advance lets the node reuse what Ready handed out: keep copies.
		rd.Sends, rd.Upstream, rd.Fetches = slices.Clone(rd.Sends), slices.Clone(rd.Upstream), slices.Clone(rd.Fetches)
		n.Advance()
		return rd
	}
	fetched := func(rd port.Ready, rev int64) port.Ready {
		t.Helper()
		if len(rd.Fetches) != 1 {
			t.Fatalf("fetches %v, want one", rd.Fetches)
		}
		return step(node.Fetched{ID: rd.Fetches[0].ID, Result: port.FetchResult{Header: hdr(rev)}})
	}
	upCreate := func(rd port.Ready, u port.UpstreamID) int64 {
		t.Helper()
		if len(rd.Sends) != 0 || len(rd.Upstream) != 1 || rd.Upstream[0].Upstream != u || rd.Upstream[0].Watch.GetCreateRequest() == nil {
			t.Fatalf("sends %v, upstream %v; want only a create on %v", rd.Sends, rd.Upstream, u)
		}
		return rd.Upstream[0].Watch.GetCreateRequest().WatchId
	}

	// The permission is revoked between the fetch and etcd's check of the
	// group's watch: the create is refused, with etcd's reason.
	rd := fetched(step(create(1, "a")), 5)
	upCreate(rd, lane.Shared)
	denied := rpctypes.ErrGRPCPermissionDenied.Error()
	rd = step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(5), WatchId: -1, Created: true, Canceled: true, CancelReason: denied}})
	if len(rd.Sends) != 1 || rd.Sends[0].Response() == nil {
		t.Fatalf("after etcd refused the group: %+v, ends %v, want one refusal", rd.Sends, rd.Ends)
	}
	if w := rd.Sends[0].Response(); !w.Created || !w.Canceled || w.WatchId != -1 || w.CancelReason != denied || len(rd.Upstream) != 0 {
		t.Fatalf("after etcd refused the group: %v, upstream %v; want the create refused with %q", rd.Sends, rd.Upstream, denied)
	}
	if g := n.Gauges().Watch; g.Groups != 0 || n.Stats().Watch.Watchers != 0 {
		t.Fatalf("after the refusal: gauges %+v, stats %+v", g, n.Stats().Watch)
	}

	// Given back: created once etcd accepts the group, and served.
	rd = fetched(step(create(1, "a")), 6)
	id := upCreate(rd, lane.Shared)
	rd = step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: id, Created: true}})
	if len(rd.Sends) != 1 || !rd.Sends[0].Response().Created || rd.Sends[0].Response().Canceled || rd.Sends[0].Response().Header.Revision != 6 {
		t.Fatalf("after etcd accepted the group: %v, want created at 6", rd.Sends)
	}
	rd = step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(7), WatchId: id,
		Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), ModRevision: 7}}}}})
	if len(rd.Sends) != 1 || len(rd.Sends[0].Response().Events) != 1 {
		t.Fatalf("the event at 7: %v", rd.Sends)
	}

	// From revision 3, behind the group's window: a catch-up watch, and
	// created once etcd accepts it; the group is not rewound.
	rd = fetched(step(node.WatchCreate{Stream: 1, Req: &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 3}}), 7)
	cid := upCreate(rd, lane.CatchUp)
	rd = step(node.UpstreamResponse{Upstream: lane.CatchUp, Watch: &pb.WatchResponse{Header: hdr(7), WatchId: cid, Created: true}})
	if len(rd.Sends) != 1 || !rd.Sends[0].Response().Created || rd.Sends[0].Response().WatchId != 1 || len(rd.Upstream) != 0 {
		t.Fatalf("after etcd accepted the catch-up watch: sends %v, upstream %v", rd.Sends, rd.Upstream)
	}
	rd = step(node.UpstreamResponse{Upstream: lane.CatchUp, Watch: &pb.WatchResponse{Header: hdr(7), WatchId: cid,
		Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("a"), ModRevision: 4}}}}})
	if len(rd.Sends) != 1 || rd.Sends[0].Response().WatchId != 1 || len(rd.Sends[0].Response().Events) != 1 {
		t.Fatalf("the catch-up's event at 4: %v", rd.Sends)
	}

	// A stream that closes while its create waits leaves nothing upstream.
	n.Step(node.OpenStream{Stream: 2, Token: "t2", Identity: "alice"})
	rd = fetched(step(create(2, "z")), 7)
	zid := upCreate(rd, lane.Shared)
	rd = step(node.CloseStream{Stream: 2})
	if len(rd.Upstream) != 1 || rd.Upstream[0].Watch.GetCancelRequest().GetWatchId() != zid {
		t.Fatalf("after the waiting stream closed: %v, want its group's watch cancelled", rd.Upstream)
	}
	if g := n.Gauges().Watch; g.Groups != 1 {
		t.Fatalf("groups after the close: %d, want a's only", g.Groups)
	}
}

// etcd refuses the token a lane's upstream streams carry, and another
// stream of the identity carries another token: only the streams with the
// refused token end, and the lane goes on under the other token. Refusals
// still coming from the old streams are ignored until the shell reports a
// stream open again with the new token; there the watches are created
// again from where they stood.
func TestLaneGoesOnUnderAnotherToken(t *testing.T) {
	n := node.New(node.Config{}, t0)
	lane := port.LaneOf(1)
	step := func(in ...node.Input) port.Ready {
		t.Helper()
		for _, i := range in {
			n.Step(i)
		}
		rd := n.Ready()
		rd.Sends, rd.Upstream, rd.Fetches, rd.Ends, rd.Lanes = slices.Clone(rd.Sends), slices.Clone(rd.Upstream), slices.Clone(rd.Fetches), slices.Clone(rd.Ends), slices.Clone(rd.Lanes)
		n.Advance()
		return rd
	}
	step(node.OpenStream{Stream: 1, Token: "ta", Identity: "alice"}, node.OpenStream{Stream: 2, Token: "tb", Identity: "alice"})
	rd := step(create(2, "k"))
	rd = step(node.Fetched{ID: rd.Fetches[0].ID, Result: port.FetchResult{Header: hdr(5)}})
	id := rd.Upstream[0].Watch.GetCreateRequest().WatchId
	step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(5), WatchId: id, Created: true}})

	rd = step(node.UpstreamLost{Upstream: lane.Shared, Token: "ta"})
	re := rd.Upstream[0].Watch.GetCreateRequest()
	expired := &pb.WatchResponse{Header: hdr(6), WatchId: -1, Created: true, Canceled: true, CancelReason: rpctypes.ErrGRPCInvalidAuthToken.Error()}
	rd = step(node.UpstreamResponse{Upstream: lane.Shared, Watch: expired})
	if len(rd.Ends) != 1 || rd.Ends[0].Stream != 1 || rd.Ends[0].Err != node.ErrLaneTokenRefused {
		t.Fatalf("after etcd refused ta: ends %v, want stream 1's only", rd.Ends)
	}
	if len(rd.Lanes) != 1 || rd.Lanes[0] != (port.LaneStart{Lane: lane, Token: "tb", Restart: true}) {
		t.Fatalf("after etcd refused ta: lanes %v, want alice's opened again with tb", rd.Lanes)
	}
	// Another refusal of ta from the old stream: not tb's.
	if rd = step(node.UpstreamResponse{Upstream: lane.Shared, Watch: expired}); len(rd.Ends) != 0 || len(rd.Lanes) != 0 {
		t.Fatalf("a refusal from the old stream: ends %v, lanes %v", rd.Ends, rd.Lanes)
	}
	rd = step(node.UpstreamLost{Upstream: lane.Shared, Token: "tb"})
	if len(rd.Upstream) != 1 || rd.Upstream[0].Watch.GetCreateRequest().GetStartRevision() != re.StartRevision {
		t.Fatalf("open again with tb: %v, want the group's watch created again from %d", rd.Upstream, re.StartRevision)
	}
	nid := rd.Upstream[0].Watch.GetCreateRequest().WatchId
	step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: nid, Created: true}})
	rd = step(node.UpstreamResponse{Upstream: lane.Shared, Watch: &pb.WatchResponse{Header: hdr(6), WatchId: nid,
		Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 6}}}}})
	if len(rd.Sends) != 1 || rd.Sends[0].Stream != 2 || len(rd.Sends[0].Response().Events) != 1 {
		t.Fatalf("the event at 6: %v, want it on stream 2", rd.Sends)
	}
	// Now a refusal is about tb: stream 2 ends, and the lane with it.
	rd = step(node.UpstreamLost{Upstream: lane.Shared, Token: "tb"})
	rd = step(node.UpstreamResponse{Upstream: lane.Shared, Watch: expired})
	if len(rd.Ends) != 1 || rd.Ends[0].Stream != 2 {
		t.Fatalf("after etcd refused tb: ends %v", rd.Ends)
	}
}
