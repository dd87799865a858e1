package watch_test

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/watch"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// ---- harness ----

var t0 = time.Unix(1_000_000, 0)

// conf is the bounds a test sets: the watch machine's and the node's.
type conf struct {
	Prefix            keyspace.Prefix
	HistoryEvents     int
	StreamBufferBytes int
	FragmentBytes     int
	ProgressInterval  time.Duration
	RetryInterval     time.Duration
}

func (c conf) node() node.Config {
	return node.Config{
		Port: port.Config{StreamBufferBytes: c.StreamBufferBytes, RetryInterval: c.RetryInterval},
		Watch: watch.Config{Prefix: c.Prefix, HistoryEvents: c.HistoryEvents, FragmentBytes: c.FragmentBytes,
			ProgressInterval: c.ProgressInterval, RetryInterval: c.RetryInterval},
	}
}

// unavailable is a transport error: a fetch that gets it is tried again.
var unavailable = status.Error(codes.Unavailable, "connection refused")

// out is the client responses of one port.Ready, described, grouped per stream.
type out map[port.StreamID][]string

// driver turns calls into the node's inputs.
type driver struct{ n *node.Node }

func (d driver) OpenStream(id port.StreamID, token string) {
	d.n.Step(node.OpenStream{Stream: id, Token: token})
}
func (d driver) CloseStream(id port.StreamID) { d.n.Step(node.CloseStream{Stream: id}) }
func (d driver) Create(id port.StreamID, r *pb.WatchCreateRequest) {
	d.n.Step(node.WatchCreate{Stream: id, Req: r})
}
func (d driver) Cancel(id port.StreamID, w int64) { d.n.Step(node.WatchCancel{Stream: id, WatchID: w}) }
func (d driver) RequestProgress(id port.StreamID) { d.n.Step(node.WatchProgress{Stream: id}) }
func (d driver) Sent(id port.StreamID, n int)     { d.n.Step(node.Written{Stream: id, Bytes: n}) }
func (d driver) Upstream(u port.UpstreamID, r *pb.WatchResponse) {
	d.n.Step(node.UpstreamResponse{Upstream: u, Watch: r})
}
func (d driver) UpstreamLost(u port.UpstreamID) { d.n.Step(node.UpstreamLost{Upstream: u}) }
func (d driver) Fetched(id port.FetchID, r port.FetchResult) {
	d.n.Step(node.Fetched{ID: id, Result: r})
}
func (d driver) Tick(now time.Time)  { d.n.Tick(now) }
func (d driver) Stats() node.Stats   { return d.n.Stats() }
func (d driver) Gauges() node.Gauges { return d.n.Gauges() }
func (d driver) Ready() port.Ready {
	rd := d.n.Ready()
	// The node reuses a Ready's slices after Advance; the tests keep them.
	rd.Sends, rd.Upstream = slices.Clone(rd.Sends), slices.Clone(rd.Upstream)
	d.n.Advance()
	return rd
}

// harness drives the node by hand, playing etcd's part.
type harness struct {
	t   *testing.T
	m   driver
	now time.Time

	last    port.Ready // the last port.Ready
	ups     []string   // the last port.Ready's upstream requests, described
	pending []port.Fetch
	allUps  []port.UpstreamRequest
	queued  map[port.StreamID]int      // bytes handed out and not acknowledged
	log     map[port.StreamID][]string // every event delivered, as "w<id>:<key>@<rev>"
}

func newHarness(t *testing.T, cfg conf) *harness {
	t.Helper()
	return &harness{
		t: t, m: driver{node.New(cfg.node(), t0)}, now: t0,
		queued: map[port.StreamID]int{}, log: map[port.StreamID][]string{},
	}
}

func (h *harness) open(ids ...port.StreamID) {
	for _, id := range ids {
		h.m.OpenStream(id, "")
	}
}

type createOpt func(*pb.WatchCreateRequest)

func withID(id int64) createOpt { return func(r *pb.WatchCreateRequest) { r.WatchId = id } }
func withPrevKV() createOpt     { return func(r *pb.WatchCreateRequest) { r.PrevKv = true } }
func withFragment() createOpt   { return func(r *pb.WatchCreateRequest) { r.Fragment = true } }
func withProgressNotify() createOpt {
	return func(r *pb.WatchCreateRequest) { r.ProgressNotify = true }
}
func withFilters(f ...pb.WatchCreateRequest_FilterType) createOpt {
	return func(r *pb.WatchCreateRequest) { r.Filters = f }
}

func createReqFor(key, end string, startRev int64, opts ...createOpt) *pb.WatchCreateRequest {
	req := &pb.WatchCreateRequest{Key: []byte(key), StartRevision: startRev}
	if end != "" {
		req.RangeEnd = []byte(end)
	}
	for _, o := range opts {
		o(req)
	}
	return req
}

// create sends a client create request on stream s.
func (h *harness) create(s port.StreamID, key, end string, startRev int64, opts ...createOpt) {
	h.m.Create(s, createReqFor(key, end, startRev, opts...))
}

// ready collects the machine's port.Ready, records it and returns the client
// responses described per stream.
func (h *harness) ready() out {
	h.t.Helper()
	rd := h.m.Ready()
	h.last = rd
	res := out{}
	for _, s := range rd.Sends {
		// Size may be estimated, but never below the encoded size, so
		// that the stream's bound holds, and not far above it.
		if n := proto.Size(s.Response()); s.Size < n || s.Size > n+16+5*len(s.Response().Events) {
			h.t.Errorf("send to stream %d: Size %d, encoded size %d", s.Stream, s.Size, n)
		}
		h.queued[s.Stream] += s.Size
		res[s.Stream] = append(res[s.Stream], desc(s.Response()))
		for _, ev := range s.Response().Events {
			h.log[s.Stream] = append(h.log[s.Stream], fmt.Sprintf("w%d:%s@%d", s.Response().WatchId, ev.Kv.Key, ev.Kv.ModRevision))
		}
	}
	h.ups = nil
	for _, u := range rd.Upstream {
		h.ups = append(h.ups, descUp(u))
	}
	h.allUps = append(h.allUps, rd.Upstream...)
	h.pending = append(h.pending, rd.Fetches...)
	return res
}

// sends returns the raw responses of the last port.Ready for stream s.
func (h *harness) sends(s port.StreamID) []*pb.WatchResponse {
	var rs []*pb.WatchResponse
	for _, x := range h.last.Sends {
		if x.Stream == s {
			rs = append(rs, x.Response())
		}
	}
	return rs
}

// answer answers fetch id with the store revision rev.
func (h *harness) answer(id port.FetchID, r port.FetchResult) {
	for i, f := range h.pending {
		if f.ID == id {
			h.pending = append(h.pending[:i:i], h.pending[i+1:]...)
			break
		}
	}
	h.m.Fetched(id, r)
}

// answerAll answers every outstanding fetch with the store revision rev.
func (h *harness) answerAll(rev int64) {
	p := h.pending
	h.pending = nil
	for _, f := range p {
		h.m.Fetched(f.ID, port.FetchResult{Header: hdr(rev)})
	}
}

func (h *harness) up(u port.UpstreamID, r *pb.WatchResponse) { h.m.Upstream(u, r) }

// ack reports every byte handed out for stream s as written.
func (h *harness) ack(s port.StreamID) {
	n := h.queued[s]
	h.queued[s] = 0
	h.m.Sent(s, n)
}

func (h *harness) tick(d time.Duration) {
	h.now = h.now.Add(d)
	h.m.Tick(h.now)
}

// creates counts the upstream create requests handed out so far on u.
func (h *harness) creates(u port.UpstreamID) int {
	n := 0
	for _, r := range h.allUps {
		if r.Upstream == u && r.Watch.GetCreateRequest() != nil {
			n++
		}
	}
	return n
}

func (h *harness) expectSends(got, want out) {
	h.t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		h.t.Errorf("client responses:\n got: %s\nwant: %s", fmtOut(got), fmtOut(want))
	}
}

func (h *harness) expectUp(want ...string) {
	h.t.Helper()
	if len(h.ups) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(h.ups, want) {
		h.t.Errorf("upstream requests:\n got: %q\nwant: %q", h.ups, want)
	}
}

func (h *harness) expectLog(s port.StreamID, want ...string) {
	h.t.Helper()
	if !reflect.DeepEqual(h.log[s], want) {
		h.t.Errorf("events delivered on stream %d:\n got: %v\nwant: %v", s, h.log[s], want)
	}
}

func fmtOut(o out) string {
	var b strings.Builder
	for s := port.StreamID(0); s < 100; s++ {
		if rs, ok := o[s]; ok {
			fmt.Fprintf(&b, "\n  stream %d: %q", s, rs)
		}
	}
	if b.Len() == 0 {
		return "(nothing)"
	}
	return b.String()
}

// desc describes a client response: watch ID, flags, header revision and
// events, e.g. "w0 rev=6 [a@5, DEL b@6]", "w-1 rev=8" (progress).
func desc(r *pb.WatchResponse) string {
	parts := []string{fmt.Sprintf("w%d", r.WatchId)}
	if r.Created {
		parts = append(parts, "created")
	}
	if r.Canceled {
		parts = append(parts, "canceled")
	}
	if r.CompactRevision != 0 {
		parts = append(parts, fmt.Sprintf("compact=%d", r.CompactRevision))
	}
	if r.CancelReason != "" {
		parts = append(parts, fmt.Sprintf("reason=%q", r.CancelReason))
	}
	if r.Fragment {
		parts = append(parts, "frag")
	}
	parts = append(parts, fmt.Sprintf("rev=%d", r.Header.GetRevision()))
	if len(r.Events) > 0 {
		evs := make([]string, len(r.Events))
		for i, ev := range r.Events {
			evs[i] = descEv(ev)
		}
		parts = append(parts, "["+strings.Join(evs, ", ")+"]")
	}
	return strings.Join(parts, " ")
}

func descEv(ev *mvccpb.Event) string {
	s := fmt.Sprintf("%s@%d", ev.Kv.Key, ev.Kv.ModRevision)
	if ev.Type == mvccpb.DELETE {
		s = "DEL " + s
	}
	if ev.PrevKv != nil {
		s += fmt.Sprintf(" prev=%s@%d", ev.PrevKv.Key, ev.PrevKv.ModRevision)
	}
	return s
}

func descUp(u port.UpstreamRequest) string {
	name := map[port.UpstreamID]string{port.WatchShared: "shared", port.WatchCatchUp: "catch-up"}[u.Upstream]
	switch x := u.Watch.RequestUnion.(type) {
	case *pb.WatchRequest_CreateRequest:
		c := x.CreateRequest
		rng := string(c.Key)
		if len(c.RangeEnd) > 0 {
			rng = fmt.Sprintf("[%s,%s)", c.Key, c.RangeEnd)
		}
		return fmt.Sprintf("%s create %d %s from %d", name, c.WatchId, rng, c.StartRevision)
	case *pb.WatchRequest_CancelRequest:
		return fmt.Sprintf("%s cancel %d", name, x.CancelRequest.WatchId)
	case *pb.WatchRequest_ProgressRequest:
		return name + " progress"
	}
	return fmt.Sprintf("%s ??? %v", name, u.Watch)
}

// ---- etcd's side ----

func hdr(rev int64) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: 11, MemberId: 22, RaftTerm: 3, Revision: rev}
}

func kv(key string, rev int64, value string) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: []byte(key), CreateRevision: 2, ModRevision: rev, Version: rev - 1, Value: []byte(value)}
}

// put is a PUT event as an upstream watch with prev_kv gives it.
func put(key string, rev int64) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.PUT, Kv: kv(key, rev, fmt.Sprintf("v%d", rev)), PrevKv: kv(key, rev-1, fmt.Sprintf("v%d", rev-1))}
}

func putV(key string, rev int64, value string) *mvccpb.Event {
	ev := put(key, rev)
	ev.Kv.Value = []byte(value)
	return ev
}

func del(key string, rev int64) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: rev}, PrevKv: kv(key, rev-1, fmt.Sprintf("v%d", rev-1))}
}

// etcdEvents is an upstream response for watch upID with one PUT per key,
// all at revision rev.
func etcdEvents(upID, rev int64, keys ...string) *pb.WatchResponse {
	r := &pb.WatchResponse{Header: hdr(rev), WatchId: upID}
	for _, k := range keys {
		r.Events = append(r.Events, put(k, rev))
	}
	return r
}

func evResp(upID, headerRev int64, evs ...*mvccpb.Event) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(headerRev), WatchId: upID, Events: evs}
}

func createdResp(upID, rev int64) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(rev), WatchId: upID, Created: true}
}

// progressResp is etcd's answer to a progress request: every watch on the
// upstream stream has been sent every event up to rev.
func progressResp(rev int64) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(rev), WatchId: -1}
}

func compactResp(upID, compactRev, rev int64) *pb.WatchResponse {
	return &pb.WatchResponse{Header: hdr(rev), WatchId: upID, CompactRevision: compactRev, Canceled: true}
}

// ---- 1. coalescing ----

func TestSharedGroupForWatchersCreatedAtDifferentTimes(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1, 2, 3)

	h.create(1, "a", "", 0)
	h.expectSends(h.ready(), out{})
	if len(h.last.Fetches) != 1 {
		t.Fatalf("fetches = %d, want 1", len(h.last.Fetches))
	}
	h.answerAll(4)
	h.expectSends(h.ready(), out{1: {"w0 created rev=4"}})
	h.expectUp("shared create 1 a from 5")
	c := h.last.Upstream[0].Watch.GetCreateRequest()
	if !c.PrevKv || !c.ProgressNotify || !c.Fragment || len(c.RangeEnd) != 0 || len(c.Filters) != 0 {
		t.Errorf("upstream create = %v, want prev_kv, progress_notify, fragment, no filters", c)
	}
	if got := h.sends(1)[0].Header; got.ClusterId != 11 || got.MemberId != 22 || got.RaftTerm != 3 {
		t.Errorf("created header = %v, want the fetched header", got)
	}

	h.up(port.WatchShared, createdResp(1, 4))
	h.up(port.WatchShared, etcdEvents(1, 5, "a"))
	h.up(port.WatchShared, etcdEvents(1, 6, "a"))
	h.expectSends(h.ready(), out{1: {"w0 rev=5 [a@5]", "w0 rev=6 [a@6]"}})

	// A second watcher after events 5 and 6: the store is at 6.
	h.create(2, "a", "", 0)
	h.ready()
	if len(h.last.Fetches) != 1 {
		t.Fatalf("fetches = %d, want 1", len(h.last.Fetches))
	}
	h.answerAll(6)
	h.expectSends(h.ready(), out{2: {"w0 created rev=6"}})
	h.expectUp()

	// A third one for which the fetch is ahead of the group: the store is
	// at 8 while the group has seen only 6.
	h.create(3, "a", "", 0)
	h.ready()
	h.answerAll(8)
	h.expectSends(h.ready(), out{3: {"w0 created rev=8"}})
	h.expectUp()

	h.up(port.WatchShared, etcdEvents(1, 7, "a"))
	h.expectSends(h.ready(), out{1: {"w0 rev=7 [a@7]"}, 2: {"w0 rev=7 [a@7]"}})
	h.up(port.WatchShared, etcdEvents(1, 8, "a"))
	h.up(port.WatchShared, etcdEvents(1, 9, "a"))
	h.expectSends(h.ready(), out{
		1: {"w0 rev=8 [a@8]", "w0 rev=9 [a@9]"},
		2: {"w0 rev=8 [a@8]", "w0 rev=9 [a@9]"},
		3: {"w0 rev=9 [a@9]"},
	})

	if n := h.creates(port.WatchShared) + h.creates(port.WatchCatchUp); n != 1 {
		t.Errorf("upstream creates = %d, want 1", n)
	}
	if st := h.m.Stats(); st.Watch.GroupsOpened != 1 || st.Watch.CatchUpsOpened != 0 || st.Watch.Watchers != 3 {
		t.Errorf("stats = %+v", st)
	}
	if g := h.m.Gauges(); g.Watch.Groups != 1 || g.Watch.CatchUps != 0 || g.Watch.WindowEvents != 5 || g.Flow.PendingFetches != 0 {
		t.Errorf("gauges = %+v", g)
	}
}

// A group for watchers that start after the latest revision seen has its
// upstream watch start exactly there, past etcd's revision, so that etcd
// counts it as synced and sends its events at once. etcd answers no
// progress request on a stream, and sends a watch no progress
// notification, while a watch on it starts past the store's revision: such
// a watch is pulled back one revision when a progress request is to go out
// on the shared stream, and a group with a watcher that wants progress
// notifications starts one revision back, or is pulled back when such a
// watcher joins; a write that reaches etcd's revision ends the need.
func TestUpstreamWatchStartsAtTheLatestRevision(t *testing.T) {
	h := newHarness(t, conf{RetryInterval: 100 * time.Millisecond})
	h.open(1, 2)
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.expectSends(h.ready(), out{1: {"w0 created rev=4"}})
	h.expectUp("shared create 1 a from 5")
	h.up(port.WatchShared, createdResp(1, 4))
	// A start revision the proxy knows is past: exactly there.
	h.create(2, "x", "", 2)
	h.ready()
	h.answerAll(5) // written elsewhere: etcd has reached a's start
	h.ready()
	h.expectUp("shared create 2 x from 2")
	// Created now, b's group starts at 6, past etcd's revision.
	h.create(1, "b", "", 0)
	h.ready()
	h.answerAll(5)
	h.expectSends(h.ready(), out{1: {"w1 created rev=5"}})
	h.expectUp("shared create 3 b from 6")
	// a's watcher needs etcd's progress up to 5: the future watch is
	// pulled back before the request goes out.
	h.m.RequestProgress(1)
	h.ready()
	h.answerAll(5)
	h.expectSends(h.ready(), out{})
	h.expectUp("shared cancel 3", "shared create 4 b from 5", "shared progress")
	if n := h.m.Stats().Watch.PulledBack; n != 1 {
		t.Errorf("pulled back = %d, want 1", n)
	}
	h.up(port.WatchShared, progressResp(5))
	h.expectSends(h.ready(), out{1: {"w-1 rev=5"}})
	// An event etcd brings at the pulled-back start goes nowhere: b's
	// watcher starts after it.
	h.up(port.WatchShared, createdResp(4, 5))
	h.up(port.WatchShared, etcdEvents(4, 5, "b"))
	h.expectSends(h.ready(), out{})

	// A watcher that wants progress notifications: its new group starts
	// one revision back; joining a future group, it pulls it back.
	h.create(2, "c", "", 0, withProgressNotify())
	h.ready()
	h.answerAll(5)
	h.ready()
	h.expectUp("shared create 5 c from 5")
	h.create(2, "e", "", 0)
	h.ready()
	h.answerAll(5)
	h.ready()
	h.expectUp("shared create 6 e from 6")
	h.create(1, "e", "", 0, withProgressNotify())
	h.ready()
	h.answerAll(5)
	h.ready()
	h.expectUp("shared cancel 6", "shared create 7 e from 5")
	// Time alone pulls nothing back.
	h.create(2, "f", "", 0)
	h.ready()
	h.answerAll(5)
	h.ready()
	h.expectUp("shared create 8 f from 6")
	h.tick(time.Minute)
	h.ready()
	h.expectUp()

	// A write reaching etcd's revision ends the need.
	h.create(2, "d", "", 0)
	h.ready()
	h.answerAll(5)
	h.ready()
	h.expectUp("shared create 9 d from 6")
	h.up(port.WatchShared, etcdEvents(5, 6, "c"))
	h.expectSends(h.ready(), out{2: {"w1 rev=6 [c@6]"}})
	h.m.RequestProgress(1)
	h.ready()
	h.answerAll(6)
	h.ready()
	h.expectUp("shared progress")
	if n := h.m.Stats().Watch.PulledBack; n != 2 {
		t.Errorf("pulled back = %d, want 2", n)
	}
}

func TestDifferentRangesGetDifferentGroups(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1)
	h.create(1, "a", "", 0)
	h.create(1, "a", "b", 0)
	h.create(1, "a", "\x00", 0)
	h.ready()
	h.answerAll(3)
	h.expectSends(h.ready(), out{1: {"w0 created rev=3", "w1 created rev=3", "w2 created rev=3"}})
	h.expectUp("shared create 1 a from 4", "shared create 2 [a,b) from 4", "shared create 3 [a,\x00) from 4")

	h.up(port.WatchShared, etcdEvents(2, 4, "a", "ab"))
	h.up(port.WatchShared, etcdEvents(3, 4, "a", "ab"))
	h.up(port.WatchShared, etcdEvents(1, 4, "a"))
	h.expectSends(h.ready(), out{1: {"w1 rev=4 [a@4, ab@4]", "w2 rev=4 [a@4, ab@4]", "w0 rev=4 [a@4]"}})
}

// ---- 2. history window, start revisions, catch-up watches and merging ----

// windowOf sets up stream 1 watching "a" on a group created at 4 that has
// seen an event at every revision from 5 to last, one per response.
func windowOf(t *testing.T, cfg conf, last int64, streams ...port.StreamID) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	h.open(1)
	h.open(streams...)
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.expectUp("shared create 1 a from 5")
	h.up(port.WatchShared, createdResp(1, 4))
	for rev := int64(5); rev <= last; rev++ {
		h.up(port.WatchShared, etcdEvents(1, rev, "a"))
	}
	h.ready()
	return h
}

func revs(id int64, key string, from, to int64) []string {
	var out []string
	for r := from; r <= to; r++ {
		out = append(out, fmt.Sprintf("w%d:%s@%d", id, key, r))
	}
	return out
}

func TestStartRevisionInsideWindow(t *testing.T) {
	h := windowOf(t, conf{HistoryEvents: 3}, 8, 2)
	h.expectLog(1, revs(0, "a", 5, 8)...)
	if g := h.m.Gauges(); g.Watch.WindowEvents != 3 {
		t.Errorf("window events = %d, want 3 (6, 7, 8)", g.Watch.WindowEvents)
	}
	h.create(2, "a", "", 6)
	h.ready()
	if f := h.last.Fetches; len(f) != 1 || f[0].Revision != 6 || f[0].Token != "" {
		t.Fatalf("fetches = %+v, want one at revision 6", f)
	}
	h.answerAll(8)
	// Replayed history carries the revision the watcher was created at, as
	// etcd's catch-up responses carry the current one.
	h.expectSends(h.ready(), out{2: {"w0 created rev=8", "w0 rev=8 [a@6]", "w0 rev=8 [a@7]", "w0 rev=8 [a@8]"}})
	h.expectUp()
	// A start revision past the group's: nothing from the window.
	h.create(2, "a", "", 9)
	h.ready()
	h.answerAll(8)
	h.expectSends(h.ready(), out{2: {"w1 created rev=8"}})
	h.expectUp()
	h.up(port.WatchShared, etcdEvents(1, 9, "a"))
	h.expectSends(h.ready(), out{1: {"w0 rev=9 [a@9]"}, 2: {"w0 rev=9 [a@9]", "w1 rev=9 [a@9]"}})
	if n := h.creates(port.WatchShared) + h.creates(port.WatchCatchUp); n != 1 {
		t.Errorf("upstream creates = %d, want 1", n)
	}
}

// A start revision older than the window: the group's upstream watch is
// reopened from there (a rewind); every watcher still gets every event once.
func TestStartRevisionOlderThanWindow(t *testing.T) {
	h := windowOf(t, conf{HistoryEvents: 3}, 8, 2, 3)
	h.create(2, "a", "", 3)
	h.ready()
	h.answerAll(8)
	h.expectSends(h.ready(), out{2: {"w0 created rev=8"}})
	h.expectUp("shared cancel 1", "shared create 2 a from 3")
	if st := h.m.Stats(); st.Watch.Rewinds != 1 || st.Watch.CatchUpsOpened != 0 {
		t.Errorf("stats = %+v", st)
	}
	// What the old upstream watch had in flight is ignored.
	h.up(port.WatchShared, etcdEvents(1, 9, "a"))
	h.expectSends(h.ready(), out{})

	h.up(port.WatchShared, createdResp(2, 9))
	h.up(port.WatchShared, evResp(2, 9, put("a", 3), put("a", 4)))
	h.expectSends(h.ready(), out{2: {"w0 rev=9 [a@3, a@4]"}})
	// A watcher joining during the rewind, from inside it.
	h.create(3, "a", "", 4)
	h.ready()
	h.answerAll(9)
	h.expectSends(h.ready(), out{3: {"w0 created rev=9", "w0 rev=9 [a@4]"}})
	h.expectUp()
	h.up(port.WatchShared, evResp(2, 9, put("a", 5), put("a", 6)))
	h.expectSends(h.ready(), out{2: {"w0 rev=9 [a@5, a@6]"}, 3: {"w0 rev=9 [a@5, a@6]"}})
	h.up(port.WatchShared, evResp(2, 9, put("a", 7), put("a", 8), put("a", 9)))
	h.expectSends(h.ready(), out{
		1: {"w0 rev=9 [a@9]"},
		2: {"w0 rev=9 [a@7, a@8, a@9]"},
		3: {"w0 rev=9 [a@7, a@8, a@9]"},
	})
	h.up(port.WatchShared, etcdEvents(2, 10, "a"))
	h.ready()
	h.expectLog(1, revs(0, "a", 5, 10)...)
	h.expectLog(2, revs(0, "a", 3, 10)...)
	h.expectLog(3, revs(0, "a", 4, 10)...)
	if n := h.creates(port.WatchCatchUp); n != 0 {
		t.Errorf("catch-up creates = %d", n)
	}
}

// A watcher without start revision whose fetched revision is older than the
// window (its read was served before events the group has since seen) gets
// a catch-up watch, merged into the group once it reaches the window.
func TestCatchUpMergesIntoGroup(t *testing.T) {
	h := newHarness(t, conf{HistoryEvents: 3})
	h.open(1)
	h.m.OpenStream(2, "tok")
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.create(2, "a", "", 0) // its fetch is in flight while 5..8 arrive
	h.ready()
	if f := h.last.Fetches; len(f) != 1 || f[0].Token != "tok" || string(f[0].Key) != "a" {
		t.Fatalf("fetches = %+v", f)
	}
	for rev := int64(5); rev <= 8; rev++ {
		h.up(port.WatchShared, etcdEvents(1, rev, "a"))
	}
	h.ready() // window: 6, 7, 8
	h.answerAll(4)
	h.expectSends(h.ready(), out{2: {"w0 created rev=4"}})
	h.expectUp("catch-up create 2 a from 5")
	c := h.last.Upstream[0].Watch.GetCreateRequest()
	if !c.PrevKv || !c.Fragment || !c.ProgressNotify {
		t.Errorf("catch-up create = %v, want prev_kv, fragment and progress_notify", c)
	}
	h.up(port.WatchCatchUp, createdResp(2, 8))
	h.up(port.WatchCatchUp, &pb.WatchResponse{Header: hdr(4), WatchId: 2}) // progress alone: not yet
	h.expectSends(h.ready(), out{})
	h.expectUp()
	h.up(port.WatchCatchUp, evResp(2, 8, put("a", 5)))
	h.expectSends(h.ready(), out{2: {"w0 rev=8 [a@5]", "w0 rev=8 [a@6]", "w0 rev=8 [a@7]", "w0 rev=8 [a@8]"}})
	h.expectUp("catch-up cancel 2")
	// What the catch-up watch still had in flight is ignored.
	h.up(port.WatchCatchUp, evResp(2, 8, put("a", 6)))
	h.up(port.WatchCatchUp, &pb.WatchResponse{Header: hdr(8), WatchId: 2, Canceled: true})
	h.expectSends(h.ready(), out{})
	h.expectUp()
	h.up(port.WatchShared, etcdEvents(1, 9, "a"))
	h.expectSends(h.ready(), out{1: {"w0 rev=9 [a@9]"}, 2: {"w0 rev=9 [a@9]"}})
	h.expectLog(2, revs(0, "a", 5, 9)...)
	if st := h.m.Stats(); st.Watch.Merged != 1 || st.Watch.CatchUpsOpened != 1 || st.Watch.GroupsOpened != 1 || st.Watch.Rewinds != 0 {
		t.Errorf("stats = %+v", st)
	}
	if g := h.m.Gauges(); g.Watch.CatchUps != 0 || g.Watch.Groups != 1 {
		t.Errorf("gauges = %+v", g)
	}
}

// A catch-up watch that overtakes the group: the group's late events are not
// delivered again.
func TestCatchUpAheadOfGroupMergesWithoutDuplicates(t *testing.T) {
	h := newHarness(t, conf{HistoryEvents: 1})
	h.open(1)
	h.m.OpenStream(2, "tok")
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.create(2, "a", "", 0)
	h.ready()
	h.up(port.WatchShared, etcdEvents(1, 5, "a"))
	h.up(port.WatchShared, etcdEvents(1, 6, "a"))
	h.ready() // window: 6
	h.answerAll(4)
	h.ready()
	h.expectUp("catch-up create 2 a from 5")
	// The catch-up watch delivers up to 8, which the group has not seen yet.
	h.up(port.WatchCatchUp, evResp(2, 9, put("a", 5), put("a", 6), put("a", 7), put("a", 8)))
	h.expectSends(h.ready(), out{2: {"w0 rev=9 [a@5, a@6, a@7, a@8]"}})
	h.expectUp("catch-up cancel 2")
	h.up(port.WatchShared, etcdEvents(1, 7, "a"))
	h.up(port.WatchShared, etcdEvents(1, 8, "a"))
	h.up(port.WatchShared, etcdEvents(1, 9, "a"))
	h.expectSends(h.ready(), out{
		1: {"w0 rev=7 [a@7]", "w0 rev=8 [a@8]", "w0 rev=9 [a@9]"},
		2: {"w0 rev=9 [a@9]"},
	})
}

// A watcher that is rewinding has not been given the group's events yet:
// neither a RequestProgress nor an idle progress notification may claim it
// has.
func TestRewindingWatcherIsNotSynced(t *testing.T) {
	h := windowOf(t, conf{HistoryEvents: 2}, 9, 2)
	h.create(2, "a", "", 3)
	h.ready()
	h.answerAll(9)
	h.expectSends(h.ready(), out{2: {"w0 created rev=9"}})
	h.expectUp("shared cancel 1", "shared create 2 a from 3")
	h.m.RequestProgress(2)
	h.ready()
	h.answerAll(9)
	h.expectSends(h.ready(), out{}) // events 3..9 have not reached stream 2
	h.up(port.WatchShared, evResp(2, 9, put("a", 3), put("a", 4), put("a", 5)))
	h.expectSends(h.ready(), out{2: {"w0 rev=9 [a@3, a@4, a@5]"}})
	h.m.Cancel(2, 0)
	h.expectSends(h.ready(), out{2: {"w0 canceled rev=9", "w-1 rev=9"}})
}

// etcd sends a watcher no progress notification before it has caught up,
// and the revisions of a stream's responses never go down.
func TestNoIdleProgressNotifyWhileRewinding(t *testing.T) {
	h := windowOf(t, conf{HistoryEvents: 2, ProgressInterval: time.Minute}, 9, 2)
	h.create(2, "a", "", 3, withProgressNotify())
	h.ready()
	h.answerAll(9)
	h.expectSends(h.ready(), out{2: {"w0 created rev=9"}})
	h.tick(time.Minute)
	h.expectSends(h.ready(), out{})
	h.up(port.WatchShared, evResp(2, 9, put("a", 3), put("a", 4), put("a", 5), put("a", 6), put("a", 7), put("a", 8), put("a", 9)))
	h.expectSends(h.ready(), out{2: {"w0 rev=9 [a@3, a@4, a@5, a@6, a@7, a@8, a@9]"}})
	h.tick(time.Minute)
	h.tick(time.Minute) // the first tick skips it: it had events
	h.expectSends(h.ready(), out{2: {"w0 rev=9"}})
}

// A held stream that drains while its group is rewinding must not skip the
// events between its place and where the window began.
func TestSlowClientResumedDuringRewind(t *testing.T) {
	h := newHarness(t, conf{HistoryEvents: 2, StreamBufferBytes: 150})
	h.open(1, 2, 3)
	h.create(1, "a", "", 0)
	h.create(2, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.ack(2)
	val := strings.Repeat("x", 40)
	for rev := int64(5); rev <= 12; rev++ {
		h.up(port.WatchShared, evResp(1, rev, putV("a", rev, val)))
		h.ready()
		h.ack(2)
	}
	h.expectLog(1, revs(0, "a", 5, 7)...) // held since 7; window: 11, 12
	h.create(3, "a", "", 6)
	h.ready()
	h.answerAll(12)
	h.ready()
	h.expectUp("shared cancel 1", "shared create 2 a from 6")
	h.ack(1)
	h.ready()
	h.ack(1)
	var evs []*mvccpb.Event
	for rev := int64(6); rev <= 13; rev++ {
		evs = append(evs, putV("a", rev, val))
	}
	h.up(port.WatchShared, evResp(2, 13, evs...))
	h.ready()
	h.ack(1)
	h.ack(2)
	h.ack(3)
	h.expectLog(1, revs(0, "a", 5, 13)...)
	h.expectLog(2, revs(0, "a", 5, 13)...)
	h.expectLog(3, revs(0, "a", 6, 13)...)
}

// ---- 3. fetch batching ----

// TestCreatesAtOneRevisionShareOneFetch: creates of one step starting at
// the same revision (informers re-watching from their list's revision)
// share the fetch that learns whether it is compacted, whichever stream
// they come on; other revisions, and streams with a token, get their own;
// a compaction found by the shared fetch answers every one of them.
func TestCreatesAtOneRevisionShareOneFetch(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1, 2)
	h.m.OpenStream(3, "tok")
	h.create(1, "a", "", 6)
	h.create(2, "a", "", 6)
	h.create(2, "b", "c", 6)
	h.create(1, "a", "", 8)
	h.create(3, "a", "", 6)
	h.expectSends(h.ready(), out{})
	var at6, at8, tok int
	for _, f := range h.last.Fetches {
		switch {
		case f.Token == "tok":
			tok++
		case f.Revision == 6:
			at6++
		case f.Revision == 8:
			at8++
		}
	}
	if at6 != 1 || at8 != 1 || tok != 1 || len(h.last.Fetches) != 3 {
		t.Fatalf("fetches = %+v, want one at 6, one at 8, one with the token", h.last.Fetches)
	}
	for _, f := range h.last.Fetches {
		if f.Revision == 6 && f.Token == "" {
			h.answer(f.ID, port.FetchResult{Err: rpctypes.ErrGRPCCompacted})
		}
	}
	h.ready() // the compacted ones read the latest revision
	h.answerAll(10)
	h.expectSends(h.ready(), out{
		1: {"w0 created rev=10", "w1 created rev=10"},
		2: {"w0 created rev=10", "w1 created rev=10"},
		3: {"w0 created rev=10"},
	})
}

func TestCreatesInOneBatchShareOneFetch(t *testing.T) {
	h := newHarness(t, conf{RetryInterval: 50 * time.Millisecond})
	h.open(1, 2)
	h.m.OpenStream(3, "tok")
	h.create(1, "a", "", 0)
	h.create(2, "b", "", 0)
	h.create(1, "c", "d", 0)
	h.expectSends(h.ready(), out{})
	if len(h.last.Fetches) != 1 {
		t.Fatalf("fetches = %+v, want 1", h.last.Fetches)
	}
	f := h.last.Fetches[0]
	if f.Token != "" || f.Revision != 0 || !bytes.Equal(f.Key, []byte{0}) {
		t.Errorf("fetch = %+v, want a tokenless read of the latest revision", f)
	}
	if g := h.m.Gauges(); g.Flow.PendingFetches != 1 {
		t.Errorf("pending fetches = %d, want 1", g.Flow.PendingFetches)
	}
	h.answerAll(7)
	h.expectSends(h.ready(), out{1: {"w0 created rev=7", "w1 created rev=7"}, 2: {"w0 created rev=7"}})
	h.expectUp("shared create 1 a from 8", "shared create 2 b from 8", "shared create 3 [c,d) from 8")

	// After port.Ready, a new create gets a new fetch.
	h.create(2, "a", "", 0)
	h.ready()
	if len(h.last.Fetches) != 1 || h.last.Fetches[0].ID == f.ID {
		t.Fatalf("fetches = %+v, want one new fetch", h.last.Fetches)
	}
	h.answerAll(9)
	h.expectSends(h.ready(), out{2: {"w1 created rev=9"}})
	h.expectUp()

	// A stream with a token gets a fetch of its own on the watched range.
	h.create(3, "x", "y", 0)
	h.create(3, "x", "y", 0)
	h.ready()
	if len(h.last.Fetches) != 2 {
		t.Fatalf("fetches = %+v, want 2", h.last.Fetches)
	}
	for _, f := range h.last.Fetches {
		if f.Token != "tok" || string(f.Key) != "x" || string(f.End) != "y" || f.Revision != 0 {
			t.Errorf("fetch = %+v, want token tok on [x,y)", f)
		}
	}
	f1, f2 := h.last.Fetches[0], h.last.Fetches[1]
	h.pending = nil
	// A transport error: the fetch is tried again after RetryInterval.
	h.m.Fetched(f1.ID, port.FetchResult{Err: unavailable})
	h.m.Fetched(f2.ID, port.FetchResult{Header: hdr(10)})
	// Etcd answers the creates of a stream in order: w1 waits for w0.
	h.expectSends(h.ready(), out{})
	h.expectUp()
	h.tick(49 * time.Millisecond)
	h.ready()
	if len(h.last.Fetches) != 0 {
		t.Errorf("fetches before RetryInterval = %+v", h.last.Fetches)
	}
	h.tick(time.Millisecond)
	h.ready()
	if len(h.last.Fetches) != 1 || h.last.Fetches[0].ID != f1.ID {
		t.Fatalf("fetches after RetryInterval = %+v, want fetch %d again", h.last.Fetches, f1.ID)
	}
	h.m.Fetched(f1.ID, port.FetchResult{Header: hdr(10)})
	h.expectSends(h.ready(), out{3: {"w0 created rev=10", "w1 created rev=10"}})
	h.expectUp("shared create 4 [x,y) from 11")
}

// ---- 4. cancel ----

func TestCancel(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1, 2)
	h.create(1, "a", "", 0)
	h.create(2, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.up(port.WatchShared, etcdEvents(1, 5, "a"))
	h.up(port.WatchShared, etcdEvents(1, 6, "a"))
	h.ready()

	h.m.Cancel(1, 0)
	got := h.ready()
	h.expectSends(got, out{1: {"w0 canceled rev=6"}})
	h.expectUp()
	if r := h.sends(1)[0]; r.Header.Revision < 6 {
		t.Errorf("cancel revision %d < last event 6", r.Header.Revision)
	}
	// Unknown watch: etcd answers nothing.
	h.m.Cancel(1, 0)
	h.m.Cancel(1, 42)
	h.expectSends(h.ready(), out{})

	h.up(port.WatchShared, etcdEvents(1, 7, "a"))
	h.expectSends(h.ready(), out{2: {"w0 rev=7 [a@7]"}})

	// A progress notification moves the group on: the cancel says so.
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(9), WatchId: 1})
	h.m.Cancel(2, 0)
	h.expectSends(h.ready(), out{2: {"w0 canceled rev=9"}})
	h.expectUp("shared cancel 1")
	h.up(port.WatchShared, etcdEvents(1, 10, "a"))
	h.expectSends(h.ready(), out{})
	if g := h.m.Gauges(); g.Watch.Groups != 0 || g.Watch.WindowEvents != 0 || g.Watch.CatchUps != 0 || g.Flow.PendingFetches != 0 {
		t.Errorf("gauges = %+v, want nothing left", g)
	}
	if st := h.m.Stats(); st.Watch.Watchers != 0 {
		t.Errorf("watchers = %d, want 0", st.Watch.Watchers)
	}
	h.expectLog(1, "w0:a@5", "w0:a@6")
	h.expectLog(2, "w0:a@5", "w0:a@6", "w0:a@7")
}

func TestCancelBeforeCreated(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1)
	h.create(1, "a", "", 0)
	h.m.Cancel(1, 0)
	h.ready()
	h.answerAll(10)
	h.expectSends(h.ready(), out{1: {"w0 created rev=10", "w0 canceled rev=10"}})
	h.expectUp()
	if g := h.m.Gauges(); g.Watch.Groups != 0 || g.Flow.PendingFetches != 0 {
		t.Errorf("gauges = %+v", g)
	}
}

func TestCloseStreamLeavesNothing(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1, 2)
	h.m.OpenStream(3, "tok")
	h.create(1, "a", "", 0)
	h.create(1, "b", "", 0)
	h.create(1, "c", "", 2) // compacted: a catch-up watch
	h.create(3, "a", "", 0)
	h.ready()
	for _, f := range h.last.Fetches {
		if f.Revision == 2 {
			h.answer(f.ID, port.FetchResult{Err: rpctypes.ErrGRPCCompacted})
		} else {
			h.answer(f.ID, port.FetchResult{Header: hdr(10)})
		}
	}
	// Revision 2 is compacted: the revision at creation is read next.
	h.expectSends(h.ready(), out{1: {"w0 created rev=10", "w1 created rev=10"}, 3: {"w0 created rev=10"}})
	h.expectUp("shared create 1 a from 11", "shared create 2 b from 11")
	if f := h.last.Fetches; len(f) != 1 || f[0].Revision != 0 {
		t.Fatalf("fetches = %+v, want one of the latest revision", f)
	}
	h.answerAll(10)
	h.expectSends(h.ready(), out{1: {"w2 created rev=10"}})
	h.expectUp("catch-up create 3 c from 2")
	h.up(port.WatchShared, etcdEvents(1, 11, "a"))
	h.up(port.WatchShared, etcdEvents(2, 12, "b"))
	h.ready()

	// A watcher still waiting for its fetch when the stream closes.
	h.create(1, "d", "", 0)
	h.ready()
	h.m.CloseStream(1)
	h.expectSends(h.ready(), out{})
	h.expectUp("catch-up cancel 3", "shared cancel 2")
	h.answerAll(13)
	h.expectSends(h.ready(), out{})
	h.expectUp()
	h.up(port.WatchShared, progressResp(13))
	h.up(port.WatchCatchUp, evResp(3, 13, put("c", 3)))
	h.up(port.WatchShared, etcdEvents(2, 13, "b"))
	h.expectSends(h.ready(), out{})

	h.m.CloseStream(3)
	h.m.CloseStream(2)
	h.expectSends(h.ready(), out{})
	h.expectUp("shared cancel 1")
	if held := testutil.NodeEmpty(h.m.Stats(), h.m.Gauges()); held != "" {
		t.Errorf("left behind: %s", held)
	}
	// Inputs for the closed streams are ignored.
	h.create(1, "a", "", 0)
	h.m.Cancel(1, 0)
	h.m.RequestProgress(1)
	h.m.Sent(1, 100)
	h.ready()
	h.answerAll(14)
	h.expectSends(h.ready(), out{})
	h.expectUp()
}

// ---- 5. filters and prev_kv ----

func TestFiltersAndPrevKV(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1)
	h.create(1, "a", "c", 0, withPrevKV())
	h.create(1, "a", "c", 0, withFilters(pb.WatchCreateRequest_NOPUT))
	h.create(1, "a", "c", 0, withFilters(pb.WatchCreateRequest_NODELETE))
	h.create(1, "a", "c", 0)
	h.create(1, "a", "c", 0, withPrevKV(), withFilters(pb.WatchCreateRequest_NOPUT, pb.WatchCreateRequest_NODELETE))
	h.ready()
	h.answerAll(4)
	h.ready()
	h.expectUp("shared create 1 [a,c) from 5")

	r := evResp(1, 5, put("a", 5), del("b", 5))
	orig := proto.Clone(r).(*pb.WatchResponse)
	evs := append([]*mvccpb.Event(nil), r.Events...)
	h.up(port.WatchShared, r)
	h.expectSends(h.ready(), out{1: {
		"w0 rev=5 [a@5 prev=a@4, DEL b@5 prev=b@4]",
		"w1 rev=5 [DEL b@5]",
		"w2 rev=5 [a@5]",
		"w3 rev=5 [a@5, DEL b@5]",
	}})
	if !proto.Equal(r, orig) {
		t.Errorf("upstream response mutated:\n got %v\nwant %v", r, orig)
	}
	for i, ev := range evs {
		if r.Events[i] != ev || ev.PrevKv == nil {
			t.Errorf("upstream event %d replaced or stripped", i)
		}
	}

	// A response whose events the filter removes entirely sends nothing,
	// and the watcher still moves past it.
	h.up(port.WatchShared, evResp(1, 6, put("b", 6)))
	h.expectSends(h.ready(), out{1: {"w0 rev=6 [b@6 prev=b@5]", "w2 rev=6 [b@6]", "w3 rev=6 [b@6]"}})
	h.up(port.WatchShared, evResp(1, 7, del("a", 7)))
	h.expectSends(h.ready(), out{1: {"w0 rev=7 [DEL a@7 prev=a@6]", "w1 rev=7 [DEL a@7]", "w3 rev=7 [DEL a@7]"}})

	// Replay from the window keeps the filters too.
	h.create(1, "a", "c", 5, withFilters(pb.WatchCreateRequest_NOPUT))
	h.create(1, "a", "c", 6)
	h.ready()
	h.answerAll(7)
	h.expectSends(h.ready(), out{1: {
		"w5 created rev=7", "w5 rev=7 [DEL b@5]", "w5 rev=7 [DEL a@7]",
		"w6 created rev=7", "w6 rev=7 [b@6]", "w6 rev=7 [DEL a@7]",
	}})
}

// ---- 6. fragments ----

func TestFragments(t *testing.T) {
	const limit = 200
	h := newHarness(t, conf{FragmentBytes: limit})
	h.open(1, 2)
	h.create(1, "k", "l", 0, withFragment())
	h.create(2, "k", "l", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.expectUp("shared create 1 [k,l) from 5")

	val := strings.Repeat("x", 60)
	var evs []*mvccpb.Event
	var want []string
	for i := 0; i < 6; i++ {
		k := fmt.Sprintf("k%d", i)
		evs = append(evs, putV(k, 5, val))
		want = append(want, fmt.Sprintf("w0:%s@5", k))
	}
	check := func(rev int64, want []string) {
		t.Helper()
		frag := h.sends(1)
		if len(frag) < 2 {
			t.Fatalf("fragmenting watcher got %d responses, want several", len(frag))
		}
		var got []string
		for i, r := range frag {
			if r.Fragment != (i < len(frag)-1) {
				t.Errorf("response %d of %d: Fragment = %v", i, len(frag), r.Fragment)
			}
			if len(r.Events) == 0 || r.WatchId != 0 || r.Header.Revision != rev {
				t.Errorf("response %d: %s", i, desc(r))
			}
			if len(r.Events) > 1 && proto.Size(r) > limit {
				t.Errorf("response %d: %d bytes > %d", i, proto.Size(r), limit)
			}
			for _, ev := range r.Events {
				got = append(got, fmt.Sprintf("w0:%s@%d", ev.Kv.Key, ev.Kv.ModRevision))
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("fragments concatenate to %v, want %v", got, want)
		}
		whole := h.sends(2)
		if len(whole) != 1 || whole[0].Fragment || len(whole[0].Events) != 6 {
			t.Errorf("non-fragmenting watcher got %d responses: %v", len(whole), whole)
		}
	}
	h.up(port.WatchShared, evResp(1, 5, evs...))
	h.ready()
	check(5, want)

	// Etcd sends the next revision in fragments: reassembled first.
	evs, want = nil, nil
	for i := 0; i < 6; i++ {
		k := fmt.Sprintf("k%d", i)
		evs = append(evs, putV(k, 6, val))
		want = append(want, fmt.Sprintf("w0:%s@6", k))
	}
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(6), WatchId: 1, Fragment: true, Events: evs[:2]})
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(6), WatchId: 1, Fragment: true, Events: evs[2:4]})
	h.expectSends(h.ready(), out{})
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(6), WatchId: 1, Events: evs[4:]})
	h.ready()
	check(6, want)

	// A small response is not fragmented.
	h.up(port.WatchShared, etcdEvents(1, 7, "k1"))
	h.expectSends(h.ready(), out{1: {"w0 rev=7 [k1@7]"}, 2: {"w0 rev=7 [k1@7]"}})
}

// staleCatchUp sets up stream 1 watching "a" on a group created at 4 that has
// seen events 5..last, and stream 2 (with a token) watching "a" with a read
// served at 4 but answered only after those events: its place is older than
// the window, so it gets a catch-up watch (ID 2) from 5.
func staleCatchUp(t *testing.T, cfg conf, last int64) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	h.open(1)
	h.m.OpenStream(2, "tok")
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.up(port.WatchShared, createdResp(1, 4))
	h.create(2, "a", "", 0)
	h.ready()
	for rev := int64(5); rev <= last; rev++ {
		h.up(port.WatchShared, etcdEvents(1, rev, "a"))
	}
	h.ready()
	h.answerAll(4)
	h.expectSends(h.ready(), out{2: {"w0 created rev=4"}})
	h.expectUp("catch-up create 2 a from 5")
	h.up(port.WatchCatchUp, createdResp(2, last))
	return h
}

func TestCatchUpFragmentsReassembled(t *testing.T) {
	h := staleCatchUp(t, conf{HistoryEvents: 1}, 8)
	h.up(port.WatchCatchUp, &pb.WatchResponse{Header: hdr(8), WatchId: 2, Fragment: true, Events: []*mvccpb.Event{put("a", 5)}})
	h.expectSends(h.ready(), out{})
	h.up(port.WatchCatchUp, &pb.WatchResponse{Header: hdr(8), WatchId: 2, Events: []*mvccpb.Event{put("a", 6)}})
	h.expectSends(h.ready(), out{2: {"w0 rev=8 [a@5, a@6]"}})
	h.expectUp()
}

// ---- 7. create errors and watch IDs ----

func TestCreateErrorsAndWatchIDs(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1)
	h.create(1, "a", "", 0)               // auto: 0
	h.create(1, "a", "", 0, withID(2))    // 2
	h.create(1, "a", "", 0)               // auto: 1
	h.create(1, "a", "", 0)               // auto: 3, skipping 2
	h.create(1, "b", "", 0, withID(7))    // 7
	h.create(1, "b", "", 0, withID(7))    // duplicate of a watcher still being created
	h.create(1, "b", "", 0, withID(2))    // duplicate
	h.create(1, "b", "a", 0)              // empty range
	h.create(1, "b", "b", 0)              // empty range
	h.create(1, "b", "", -1)              // negative start revision
	h.create(1, "b", "\x00", 0)           // from key: valid, auto 4
	h.create(1, "", "", 0, withID(5))     // key "" is \x00: valid
	h.create(1, "", "\x00", 0, withID(6)) // everything: valid
	dup := "w-1 created canceled reason=\"mvcc: duplicate watch ID provided on the WatchStream\" rev=5"
	empty := "w-1 created canceled reason=\"mvcc: watcher range is empty\" rev=5"
	compacted := fmt.Sprintf("w-1 created canceled reason=%q rev=5", rpctypes.ErrCompacted.Error())
	// Etcd answers creates in order: the refusals wait for w0..w7, and
	// carry the revision as of their turn.
	h.expectSends(h.ready(), out{})
	h.answerAll(5)
	h.expectSends(h.ready(), out{1: {
		"w0 created rev=5", "w2 created rev=5", "w1 created rev=5", "w3 created rev=5", "w7 created rev=5",
		dup, dup, empty, empty, compacted,
		"w4 created rev=5", "w5 created rev=5", "w6 created rev=5",
	}})
	h.expectUp("shared create 1 a from 6", "shared create 2 b from 6", "shared create 3 [b,\x00) from 6", "shared create 4 \x00 from 6", "shared create 5 [\x00,\x00) from 6")

	// Error responses carry the latest revision seen.
	h.create(1, "a", "", 0, withID(0)) // 0 is "auto": 8
	h.create(1, "a", "", 0, withID(3))
	h.expectSends(h.ready(), out{})
	h.answerAll(6)
	h.expectSends(h.ready(), out{1: {"w8 created rev=6", "w-1 created canceled reason=\"mvcc: duplicate watch ID provided on the WatchStream\" rev=6"}})
	// With nothing pending, a refusal is answered at once.
	h.create(1, "a", "", 0, withID(3))
	h.expectSends(h.ready(), out{1: {"w-1 created canceled reason=\"mvcc: duplicate watch ID provided on the WatchStream\" rev=6"}})

	// A cancelled ID may be chosen again, but auto IDs never go back.
	h.m.Cancel(1, 1)
	h.create(1, "a", "", 0, withID(1))
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(6)
	h.expectSends(h.ready(), out{1: {"w1 created rev=6", "w9 created rev=6"}})
	if r := h.last.Sends; len(r) > 0 && r[0].Watch.Header.Revision != 6 {
		t.Errorf("header = %v", r[0].Watch.Header)
	}
}

// Etcd checks permission before it picks an automatic watch ID, so a create
// refused for permission consumes no ID.
func TestRefusedCreateConsumesNoAutoID(t *testing.T) {
	h := newHarness(t, conf{})
	h.m.OpenStream(1, "tok")
	h.create(1, "secret", "", 0)
	h.ready()
	denied := rpctypes.ErrGRPCPermissionDenied
	h.answer(h.pending[0].ID, port.FetchResult{Header: hdr(5), Err: denied})
	h.expectSends(h.ready(), out{1: {fmt.Sprintf("w-1 created canceled reason=%q rev=5", denied.Error())}})
	h.expectUp()
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(5)
	h.expectSends(h.ready(), out{1: {"w0 created rev=5"}})
}

func TestFetchErrorRefusesCreate(t *testing.T) {
	h := newHarness(t, conf{})
	h.m.OpenStream(1, "tok")
	h.create(1, "a", "", 0)
	h.ready()
	err := rpctypes.ErrGRPCInvalidAuthToken
	h.answer(h.pending[0].ID, port.FetchResult{Err: err})
	h.expectSends(h.ready(), out{1: {fmt.Sprintf("w-1 created canceled reason=%q rev=0", err.Error())}})
	h.expectUp()
	if st := h.m.Stats(); st.Watch.Watchers != 0 {
		t.Errorf("watchers = %d", st.Watch.Watchers)
	}
	if g := h.m.Gauges(); g.Watch.Groups != 0 || g.Flow.PendingFetches != 0 {
		t.Errorf("gauges = %+v", g)
	}
}

// ---- 8. compaction ----

func TestCompactedStartRevision(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1)
	h.create(1, "a", "", 2, withID(4))
	h.ready()
	if f := h.last.Fetches; len(f) != 1 || f[0].Revision != 2 {
		t.Fatalf("fetches = %+v, want one at revision 2", f)
	}
	h.answer(h.last.Fetches[0].ID, port.FetchResult{Err: rpctypes.ErrGRPCCompacted})
	h.expectSends(h.ready(), out{})
	if f := h.last.Fetches; len(f) != 1 || f[0].Revision != 0 {
		t.Fatalf("fetches = %+v, want one of the latest revision", f)
	}
	h.answerAll(10)
	h.expectSends(h.ready(), out{1: {"w4 created rev=10"}})
	h.expectUp("catch-up create 1 a from 2")
	h.up(port.WatchCatchUp, createdResp(1, 10))
	h.expectSends(h.ready(), out{})
	h.up(port.WatchCatchUp, compactResp(1, 5, 10))
	h.expectSends(h.ready(), out{1: {"w4 canceled compact=5 rev=10"}})
	h.expectUp("catch-up cancel 1") // etcd keeps it until cancelled
	if st := h.m.Stats(); st.Watch.Compacted != 1 || st.Watch.Watchers != 0 {
		t.Errorf("stats = %+v", st)
	}
	if g := h.m.Gauges(); g.Watch.CatchUps != 0 || g.Watch.Groups != 0 {
		t.Errorf("gauges = %+v", g)
	}
	// As in etcd, the ID stays taken until the client cancels the watch,
	// which etcd then confirms.
	h.create(1, "a", "", 0, withID(4))
	h.expectSends(h.ready(), out{1: {"w-1 created canceled reason=\"mvcc: duplicate watch ID provided on the WatchStream\" rev=10"}})
	h.m.Cancel(1, 4)
	h.expectSends(h.ready(), out{1: {"w4 canceled rev=10"}})
	h.create(1, "a", "", 0, withID(4))
	h.ready()
	h.answerAll(10)
	h.expectSends(h.ready(), out{1: {"w4 created rev=10"}})
}

// ---- 9. progress requests ----

func TestRequestProgress(t *testing.T) {
	h := newHarness(t, conf{RetryInterval: 100 * time.Millisecond})
	h.open(1, 2)
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.up(port.WatchShared, createdResp(1, 4))

	h.m.RequestProgress(1)
	// No watchers: like etcd, the proxy says nothing (and fetches nothing
	// for it).
	h.m.RequestProgress(2)
	h.expectSends(h.ready(), out{})
	if len(h.last.Fetches) != 1 || h.last.Fetches[0].Key == nil {
		t.Fatalf("fetches = %+v, want one, stream 1's", h.last.Fetches)
	}
	h.answerAll(8) // writes elsewhere moved the store to 8
	h.expectSends(h.ready(), out{})
	h.expectUp("shared progress")

	h.tick(50 * time.Millisecond)
	h.expectSends(h.ready(), out{})
	h.expectUp()
	h.tick(50 * time.Millisecond)
	h.expectSends(h.ready(), out{})
	h.expectUp("shared progress")

	// A notification below the requested revision does not answer it.
	h.up(port.WatchShared, progressResp(5))
	h.expectSends(h.ready(), out{})
	// An event, then the notification: the event goes first.
	h.up(port.WatchShared, etcdEvents(1, 6, "a"))
	h.up(port.WatchShared, progressResp(9))
	h.expectSends(h.ready(), out{1: {"w0 rev=6 [a@6]", "w-1 rev=8"}})
	if r := h.sends(1)[1]; r.Created || r.Canceled || len(r.Events) != 0 {
		t.Errorf("progress response = %v", r)
	}

	// Nothing pending: no more upstream requests.
	h.tick(time.Second)
	h.expectUp()
	h.expectSends(h.ready(), out{})

	// A request already satisfied by the group is answered at once.
	h.m.RequestProgress(1)
	h.ready()
	h.answerAll(9)
	h.expectSends(h.ready(), out{1: {"w-1 rev=9"}})
}

// A request for a stream whose watcher is still catching up on its own
// watch waits for it.
func TestRequestProgressWaitsForCatchUp(t *testing.T) {
	h := staleCatchUp(t, conf{HistoryEvents: 1}, 8)
	h.m.RequestProgress(2)
	h.ready()
	h.answerAll(8)
	h.expectSends(h.ready(), out{})
	h.expectUp("catch-up progress")
	h.up(port.WatchCatchUp, evResp(2, 8, put("a", 5)))
	h.expectSends(h.ready(), out{2: {"w0 rev=8 [a@5]"}})
	h.up(port.WatchCatchUp, evResp(2, 8, put("a", 6), put("a", 7)))
	h.expectSends(h.ready(), out{2: {"w0 rev=8 [a@6, a@7]", "w0 rev=8 [a@8]", "w-1 rev=8"}})
	h.expectUp("catch-up cancel 2")
}

// Etcd answers a progress request on a stream before it creates a watch
// requested after it. A notification that answers a progress request sent
// before a group's upstream create must not count as progress of that group.
func TestProgressNotificationPredatingGroupCreate(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1)
	h.m.OpenStream(2, "tok")
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(10)
	h.ready()
	h.expectUp("shared create 1 a from 11")
	h.up(port.WatchShared, createdResp(1, 10))

	h.m.RequestProgress(1)
	h.create(2, "b", "", 0)
	h.ready()
	var progressFetch, createFetch port.FetchID
	for _, f := range h.last.Fetches {
		if f.Token == "tok" {
			createFetch = f.ID
		} else {
			progressFetch = f.ID
		}
	}
	// The create's read is served at 10; then b is written at 11 and 12;
	// the progress read is served at 12 and answered first.
	h.answer(progressFetch, port.FetchResult{Header: hdr(12)})
	h.ready()
	h.expectUp("shared progress") // etcd handles it now, at 12: only "a" is watched
	h.answer(createFetch, port.FetchResult{Header: hdr(10)})
	h.expectSends(h.ready(), out{2: {"w0 created rev=10"}})
	h.expectUp("shared create 2 b from 11")
	// etcd queues the progress answer on the watch stream's event channel
	// and the created response on its control channel; its sendLoop picks
	// between the two ready channels at random (select), so the created
	// response may overtake the older progress answer.
	h.up(port.WatchShared, createdResp(2, 12))
	h.up(port.WatchShared, progressResp(12)) // the answer to the request sent before the create
	h.expectSends(h.ready(), out{1: {"w-1 rev=12"}})

	// Stream 2 asks for progress at 12: b@11 and b@12 have not reached it.
	h.m.RequestProgress(2)
	h.ready()
	h.answerAll(12)
	h.expectSends(h.ready(), out{})
	h.up(port.WatchShared, evResp(2, 12, put("b", 11)))
	h.up(port.WatchShared, evResp(2, 12, put("b", 12)))
	h.ready()
	h.expectSends(h.ready(), out{})
	if got := h.log[2]; len(got) != 2 {
		t.Fatalf("events = %v", got)
	}
}

// A stream's progress request waits on the upstream stream its watchers are
// on now, not the one they were on when it was made.
func TestProgressRequestFollowsWatcherIntoGroup(t *testing.T) {
	h := staleCatchUp(t, conf{HistoryEvents: 1, RetryInterval: 100 * time.Millisecond}, 8)
	h.m.RequestProgress(2)
	h.ready()
	h.answerAll(10) // writes elsewhere at 9 and 10
	h.ready()
	h.expectUp("catch-up progress") // the catch-up watch is not synced: etcd ignores it
	h.up(port.WatchCatchUp, evResp(2, 10, put("a", 5), put("a", 6), put("a", 7)))
	h.expectSends(h.ready(), out{2: {"w0 rev=10 [a@5, a@6, a@7]", "w0 rev=10 [a@8]"}})
	h.expectUp("catch-up cancel 2")
	// The catch-up stream has no watch left, so etcd answers no progress request
	// on it; the answer must come from the shared stream, which must be asked.
	h.tick(100 * time.Millisecond)
	h.ready()
	found := false
	for _, u := range h.ups {
		found = found || u == "shared progress"
	}
	if !found {
		t.Errorf("upstream requests after RetryInterval = %q, want a shared progress request", h.ups)
	}
	h.up(port.WatchShared, progressResp(10))
	h.expectSends(h.ready(), out{2: {"w-1 rev=10"}})
}

func TestProgressRequestFollowsWatcherToCatchUp(t *testing.T) {
	h := newHarness(t, conf{HistoryEvents: 1, StreamBufferBytes: 150, RetryInterval: 100 * time.Millisecond})
	h.open(1)
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	val := strings.Repeat("x", 40)
	for rev := int64(5); rev <= 9; rev++ {
		h.up(port.WatchShared, evResp(1, rev, putV("a", rev, val)))
		h.ready()
	}
	h.expectLog(1, "w0:a@5", "w0:a@6", "w0:a@7")
	if g := h.m.Gauges(); g.Flow.HeldStreams != 1 {
		t.Fatalf("held streams = %d, want 1", g.Flow.HeldStreams)
	}
	h.m.RequestProgress(1)
	h.ready()
	h.answerAll(11)
	h.ready()
	h.expectUp("shared progress")
	h.up(port.WatchShared, progressResp(11))
	h.expectSends(h.ready(), out{})

	h.ack(1) // window is 9 only: a catch-up watch from 8
	h.ready()
	h.expectUp("shared cancel 1", "catch-up create 2 a from 8")
	h.up(port.WatchCatchUp, createdResp(2, 11))
	h.up(port.WatchCatchUp, evResp(2, 11, putV("a", 8, val), putV("a", 9, val)))
	h.expectSends(h.ready(), out{1: {"w0 rev=11 [a@8, a@9]"}})
	h.tick(100 * time.Millisecond)
	h.ready()
	found := false
	for _, u := range h.ups {
		found = found || u == "catch-up progress"
	}
	if !found {
		t.Fatalf("upstream requests after RetryInterval = %q, want a catch-up progress request", h.ups)
	}
	h.up(port.WatchCatchUp, progressResp(11))
	h.expectSends(h.ready(), out{1: {"w-1 rev=11"}})
}

func TestProgressNotifyOnIdleWatchers(t *testing.T) {
	h := newHarness(t, conf{ProgressInterval: time.Minute})
	h.open(1)
	h.create(1, "a", "", 0, withProgressNotify())
	h.create(1, "b", "", 0, withProgressNotify())
	h.create(1, "c", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.up(port.WatchShared, etcdEvents(1, 5, "a"))
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(6), WatchId: 2}) // b's group is at 6
	h.ready()
	h.tick(59 * time.Second)
	h.expectSends(h.ready(), out{})
	h.tick(time.Second)
	// w0 had an event since: skipped this time.
	h.expectSends(h.ready(), out{1: {"w1 rev=6"}})
	h.tick(time.Minute)
	h.expectSends(h.ready(), out{1: {"w0 rev=5", "w1 rev=6"}})
}

// By default the cadence is etcd's: a progress notification etcd sends on a
// range's upstream watch reaches the watchers that asked for notifications
// and have every event up to it, and nobody else; the proxy sends none of
// its own.
func TestProgressNotificationsFollowEtcd(t *testing.T) {
	h := windowOf(t, conf{HistoryEvents: 2}, 6, 2, 3)
	h.create(1, "a", "", 0, withProgressNotify()) // w1, at 6
	h.create(2, "a", "", 0)                       // did not ask
	h.ready()
	h.answerAll(6)
	h.ready()
	h.tick(11 * time.Minute)
	h.expectSends(h.ready(), out{})
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(8), WatchId: 1})
	h.expectSends(h.ready(), out{1: {"w1 rev=8"}})
	// A watcher that joined through a rewind gets notifications once etcd
	// has brought it every event.
	h.create(3, "a", "", 2, withProgressNotify())
	h.ready()
	h.answerAll(8)
	h.expectSends(h.ready(), out{3: {"w0 created rev=8"}})
	h.expectUp("shared cancel 1", "shared create 2 a from 2")
	h.up(port.WatchShared, evResp(2, 8, put("a", 2), put("a", 3), put("a", 4), put("a", 5), put("a", 6)))
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(9), WatchId: 2})
	h.expectSends(h.ready(), out{
		1: {"w1 rev=9"},
		3: {"w0 rev=8 [a@2, a@3, a@4, a@5, a@6]", "w0 rev=9"},
	})
	// A notification never goes below what a watcher was told.
	h.create(2, "a", "", 0, withProgressNotify())
	h.ready()
	h.answerAll(12)
	h.expectSends(h.ready(), out{2: {"w1 created rev=12"}})
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(10), WatchId: 2})
	h.expectSends(h.ready(), out{1: {"w1 rev=10"}, 2: {"w1 rev=12"}, 3: {"w0 rev=10"}})

	// With the proxy's own interval set, etcd's notifications only move the
	// group on.
	o := windowOf(t, conf{ProgressInterval: time.Minute}, 6)
	o.create(1, "a", "", 0, withProgressNotify())
	o.ready()
	o.answerAll(6)
	o.ready()
	o.up(port.WatchShared, &pb.WatchResponse{Header: hdr(8), WatchId: 1})
	o.expectSends(o.ready(), out{})
	o.tick(time.Minute)
	o.expectSends(o.ready(), out{1: {"w1 rev=8"}})
}

// ---- 10. slow clients ----

func TestSlowClient(t *testing.T) {
	h := newHarness(t, conf{HistoryEvents: 4, StreamBufferBytes: 150})
	h.open(1, 2)
	h.create(1, "a", "", 0)
	h.create(2, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.ack(2)
	h.expectUp("shared create 1 a from 5")
	val := strings.Repeat("x", 40)
	event := func(rev int64) {
		t.Helper()
		h.up(port.WatchShared, evResp(1, rev, putV("a", rev, val)))
		h.ready()
		h.ack(2) // stream 2 keeps up
	}
	for rev := int64(5); rev <= 9; rev++ {
		event(rev)
	}
	// Stream 1 went over its bound after 7.
	h.expectLog(1, "w0:a@5", "w0:a@6", "w0:a@7")
	if g := h.m.Gauges(); g.Flow.HeldStreams != 1 || g.Flow.QueuedBytes != h.queued[1] {
		t.Errorf("gauges = %+v, queued for stream 1 = %d", g, h.queued[1])
	}
	if h.queued[1] <= 150 {
		t.Errorf("stream 1 held at %d queued bytes", h.queued[1])
	}
	if st := h.m.Stats(); st.Holds != 1 {
		t.Errorf("held = %d", st.Holds)
	}
	// Acknowledging part of it is not enough: it must drain below half.
	h.queued[1] -= 76
	h.m.Sent(1, h.queued[1])
	h.queued[1] = 76
	h.expectSends(h.ready(), out{})
	// Drained: the window (6..9) still reaches back to 8.
	h.ack(1)
	h.expectSends(h.ready(), out{1: {"w0 rev=8 [a@8]", "w0 rev=9 [a@9]"}})
	h.expectUp()
	h.ack(1)
	event(10)
	h.ack(1)

	// Stream 1 falls behind further than the window reaches.
	for rev := int64(11); rev <= 19; rev++ {
		event(rev)
	}
	h.expectLog(2, "w0:a@5", "w0:a@6", "w0:a@7", "w0:a@8", "w0:a@9", "w0:a@10", "w0:a@11",
		"w0:a@12", "w0:a@13", "w0:a@14", "w0:a@15", "w0:a@16", "w0:a@17", "w0:a@18", "w0:a@19")
	// Window: 16..19; stream 1 has had 13.
	h.ack(1)
	h.expectSends(h.ready(), out{})
	h.expectUp("catch-up create 2 a from 14")
	h.up(port.WatchCatchUp, createdResp(2, 19))
	h.up(port.WatchCatchUp, evResp(2, 19, putV("a", 14, val), putV("a", 15, val)))
	h.ready()
	h.expectUp("catch-up cancel 2")
	h.ack(1)
	event(20)
	h.ack(1)
	h.ready() // what the last acknowledgement let through
	var want []string
	for rev := 5; rev <= 20; rev++ {
		want = append(want, fmt.Sprintf("w0:a@%d", rev))
	}
	h.expectLog(1, want...)
	h.expectLog(2, want...)
	if g := h.m.Gauges(); g.Flow.HeldStreams != 0 || g.Watch.CatchUps != 0 || g.Watch.Groups != 1 {
		t.Errorf("gauges = %+v", g)
	}
}

// A held stream whose catch-up watch answers lets it go and starts again from
// where the client is once drained.
func TestSlowClientOnCatchUp(t *testing.T) {
	h := staleCatchUp(t, conf{HistoryEvents: 1, StreamBufferBytes: 150}, 20)
	val := strings.Repeat("x", 40)
	for rev := int64(5); rev <= 7; rev++ {
		h.up(port.WatchCatchUp, evResp(2, 20, putV("a", rev, val)))
		h.ready()
	}
	// Over the bound after 7: the catch-up watch is let go at once.
	h.expectLog(2, revs(0, "a", 5, 7)...)
	h.expectUp("catch-up cancel 2")
	h.up(port.WatchCatchUp, evResp(2, 20, putV("a", 8, val)))
	h.expectSends(h.ready(), out{})
	h.ack(2)
	h.ready()
	h.expectUp("catch-up create 3 a from 8")
	h.up(port.WatchCatchUp, evResp(2, 20, putV("a", 9, val))) // the old watch: ignored
	h.up(port.WatchCatchUp, evResp(3, 20, putV("a", 8, val)))
	h.ready()
	h.expectLog(2, revs(0, "a", 5, 8)...)
}

// ---- 11. upstream lost ----

func TestUpstreamLost(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1, 2)
	h.create(1, "a", "", 0)
	h.create(2, "a", "", 0)
	h.create(2, "b", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.expectUp("shared create 1 a from 5", "shared create 2 b from 5")
	h.up(port.WatchShared, etcdEvents(1, 5, "a"))
	h.up(port.WatchShared, etcdEvents(1, 6, "a"))
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(6), WatchId: 2}) // b is at 6
	// Half of a fragmented response, lost with the stream.
	h.up(port.WatchShared, &pb.WatchResponse{Header: hdr(7), WatchId: 1, Fragment: true, Events: []*mvccpb.Event{put("a", 7)}})
	h.ready()

	h.m.UpstreamLost(port.WatchShared)
	h.expectSends(h.ready(), out{})
	h.expectUp("shared create 3 a from 7", "shared create 4 b from 7")
	h.up(port.WatchShared, etcdEvents(1, 8, "a")) // the old watch: gone
	h.up(port.WatchShared, createdResp(3, 8))
	h.up(port.WatchShared, createdResp(4, 8))
	// Etcd sends from 7 again, here in a response that also repeats 6.
	h.up(port.WatchShared, evResp(3, 8, put("a", 6), put("a", 7)))
	h.up(port.WatchShared, etcdEvents(3, 8, "a"))
	h.up(port.WatchShared, etcdEvents(4, 8, "b"))
	h.expectSends(h.ready(), out{
		1: {"w0 rev=8 [a@7]", "w0 rev=8 [a@8]"},
		2: {"w0 rev=8 [a@7]", "w0 rev=8 [a@8]", "w1 rev=8 [b@8]"},
	})
	h.expectLog(1, "w0:a@5", "w0:a@6", "w0:a@7", "w0:a@8")
	if g := h.m.Gauges(); g.Watch.Groups != 2 {
		t.Errorf("gauges = %+v", g)
	}

	// Lost again, and etcd has compacted past where the groups stand.
	h.m.UpstreamLost(port.WatchShared)
	h.ready()
	h.expectUp("shared create 5 a from 9", "shared create 6 b from 9")
	h.up(port.WatchShared, createdResp(5, 20))
	h.up(port.WatchShared, compactResp(5, 15, 20))
	h.up(port.WatchShared, createdResp(6, 20))
	h.up(port.WatchShared, compactResp(6, 15, 20))
	h.expectSends(h.ready(), out{
		1: {"w0 canceled compact=15 rev=20"},
		2: {"w0 canceled compact=15 rev=20", "w1 canceled compact=15 rev=20"},
	})
	if g := h.m.Gauges(); g.Watch.Groups != 0 || g.Watch.CatchUps != 0 || g.Watch.WindowEvents != 0 {
		t.Errorf("gauges = %+v", g)
	}
	if st := h.m.Stats(); st.Watch.Compacted != 3 || st.Watch.Watchers != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// Watchers that need nothing before the compaction revision survive it:
// etcd compacts a watch only if its next revision is below CompactRevision.
func TestUpstreamCompactionSparesWatchersAtCompactRevision(t *testing.T) {
	h := newHarness(t, conf{})
	h.open(1, 2, 3)
	h.create(1, "c", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	h.expectUp("shared create 1 c from 5")
	h.create(2, "c", "", 0)
	h.ready()
	h.answerAll(8) // next: 9
	h.ready()
	h.create(3, "c", "", 0)
	h.ready()
	h.answerAll(9) // next: 10
	h.ready()
	h.m.UpstreamLost(port.WatchShared)
	h.ready()
	h.expectUp("shared create 2 c from 5")
	h.up(port.WatchShared, createdResp(2, 12))
	h.up(port.WatchShared, compactResp(2, 9, 12))
	h.expectSends(h.ready(), out{1: {"w0 canceled compact=9 rev=12"}})
	// etcd keeps a compacted watch until it is cancelled.
	h.expectUp("shared cancel 2", "shared create 3 c from 9")
	h.up(port.WatchShared, etcdEvents(3, 9, "c"))
	h.up(port.WatchShared, etcdEvents(3, 10, "c"))
	h.expectSends(h.ready(), out{2: {"w0 rev=9 [c@9]", "w0 rev=10 [c@10]"}, 3: {"w0 rev=10 [c@10]"}})
}

func TestUpstreamLostCatchUp(t *testing.T) {
	h := staleCatchUp(t, conf{HistoryEvents: 1}, 20)
	h.up(port.WatchCatchUp, evResp(2, 20, put("a", 5)))
	h.up(port.WatchCatchUp, &pb.WatchResponse{Header: hdr(6), WatchId: 2}) // nothing else up to 6
	h.expectSends(h.ready(), out{2: {"w0 rev=20 [a@5]"}})
	h.m.UpstreamLost(port.WatchCatchUp)
	h.expectSends(h.ready(), out{})
	h.expectUp("catch-up create 3 a from 7")
	h.up(port.WatchCatchUp, evResp(2, 20, put("a", 6))) // the old stream: gone
	h.up(port.WatchCatchUp, evResp(3, 20, put("a", 7)))
	h.expectSends(h.ready(), out{2: {"w0 rev=20 [a@7]"}})
}

// ---- 12. determinism ----

// etcdSim remembers what the node asked of etcd, so that a step of the
// script can answer "the pending fetches" or "the latest upstream watch on
// key" without hard-coding IDs. It only reads Ready.
type etcdSim struct {
	pending []port.Fetch
	ids     map[string]int64 // "<stream> <key>" -> latest upstream watch ID
}

func (e *etcdSim) observe(rd port.Ready) {
	for _, f := range rd.Fetches {
		if !slices.ContainsFunc(e.pending, func(p port.Fetch) bool { return p.ID == f.ID }) {
			e.pending = append(e.pending, f)
		}
	}
	for _, u := range rd.Upstream {
		if c := u.Watch.GetCreateRequest(); c != nil {
			e.ids[fmt.Sprintf("%v %s", u.Upstream, c.Key)] = c.WatchId
		}
	}
}

func (e *etcdSim) id(u port.UpstreamID, key string) int64 {
	return e.ids[fmt.Sprintf("%v %s", u, key)]
}

// answer answers every pending fetch at rev; fetches at a start revision
// find it compacted if compacted is set.
func (e *etcdSim) answer(rev int64, compacted bool) []node.Input {
	var in []node.Input
	for _, f := range e.pending {
		r := port.FetchResult{Header: hdr(rev)}
		if compacted && f.Revision != 0 {
			r = port.FetchResult{Err: rpctypes.ErrGRPCCompacted}
		}
		in = append(in, node.Fetched{ID: f.ID, Result: r})
	}
	e.pending = nil
	return in
}

func (e *etcdSim) retry() []node.Input {
	var in []node.Input
	for _, f := range e.pending {
		in = append(in, node.Fetched{ID: f.ID, Result: port.FetchResult{Err: unavailable}})
	}
	e.pending = nil
	return in
}

// determinismScript is one long sequence of inputs covering creation and
// its errors, coalescing, filters, fragments both ways, rewinds, catch-up
// watches and merging, progress requests and notifications, slow clients,
// fetch retries, cancels, compaction, upstream loss and closing streams.
// Each step makes its inputs from what the node asked for so far.
func determinismScript() []func(e *etcdSim) []node.Input {
	val := strings.Repeat("y", 40)
	big := strings.Repeat("z", 70)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	sh := func(e *etcdSim, key string, r *pb.WatchResponse) node.Input {
		r.WatchId = e.id(port.WatchShared, key)
		return node.UpstreamResponse{Upstream: port.WatchShared, Watch: r}
	}
	cu := func(e *etcdSim, key string, r *pb.WatchResponse) node.Input {
		r.WatchId = e.id(port.WatchCatchUp, key)
		return node.UpstreamResponse{Upstream: port.WatchCatchUp, Watch: r}
	}
	create := func(s port.StreamID, r *pb.WatchCreateRequest) node.Input { return node.WatchCreate{Stream: s, Req: r} }
	written := func(n int, ss ...port.StreamID) []node.Input {
		var in []node.Input
		for _, s := range ss {
			in = append(in, node.Written{Stream: s, Bytes: n})
		}
		return in
	}
	fixed := func(in ...node.Input) func(*etcdSim) []node.Input {
		return func(*etcdSim) []node.Input { return in }
	}
	return []func(*etcdSim) []node.Input{
		fixed(node.OpenStream{Stream: 1}, node.OpenStream{Stream: 2}, node.OpenStream{Stream: 3, Token: "tok"}, node.OpenStream{Stream: 4}),
		fixed(
			create(1, createReqFor("a", "", 0)),
			create(2, createReqFor("a", "", 0)),
			create(1, createReqFor("b", "c", 0, withPrevKV(), withFragment())),
			create(3, createReqFor("a", "", 0)),
			create(4, createReqFor("b", "c", 0, withFilters(pb.WatchCreateRequest_NOPUT), withProgressNotify())),
			create(2, createReqFor("b", "a", 0)),
			create(2, createReqFor("a", "", -3)),
			create(2, createReqFor("a", "", 0, withID(0))),
		),
		func(e *etcdSim) []node.Input { return e.answer(4, false) },
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "a", createdResp(0, 4)), sh(e, "b", createdResp(0, 4))}
		},
		func(e *etcdSim) []node.Input { return []node.Input{sh(e, "a", etcdEvents(0, 5, "a"))} },
		func(e *etcdSim) []node.Input { return []node.Input{sh(e, "a", evResp(0, 6, putV("a", 6, val)))} },
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "b", evResp(0, 7, putV("b", 7, big), putV("b1", 7, big), del("b2", 7)))}
		},
		fixed(written(1000, 2, 3, 4)...),
		func(e *etcdSim) []node.Input {
			var in []node.Input
			for rev := int64(8); rev <= 10; rev++ {
				in = append(in, sh(e, "a", evResp(0, rev, putV("a", rev, val))))
			}
			return in
		},
		fixed(written(1000, 2, 3)...),
		fixed(create(2, createReqFor("a", "", 3, withPrevKV()))),
		func(e *etcdSim) []node.Input { return e.answer(10, false) }, // a rewind
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "a", evResp(0, 10, put("a", 3), put("a", 5)))}
		},
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "a", evResp(0, 10, put("a", 6), put("a", 7), put("a", 8)))}
		},
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "a", evResp(0, 10, put("a", 9), put("a", 10)))}
		},
		fixed(node.WatchProgress{Stream: 2}, node.WatchProgress{Stream: 4}, node.WatchProgress{Stream: 1}),
		func(e *etcdSim) []node.Input { return e.answer(11, false) },
		fixed(node.Tick{Now: at(50 * time.Millisecond)}),
		fixed(node.Tick{Now: at(100 * time.Millisecond)}),
		fixed(node.UpstreamResponse{Upstream: port.WatchShared, Watch: progressResp(11)}),
		fixed(written(1000, 2, 3, 4)...),
		fixed(written(100000, 1)...),
		fixed(node.WatchCancel{Stream: 3, WatchID: 0}),
		fixed(node.UpstreamLost{Upstream: port.WatchShared}),
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "a", createdResp(0, 12)), sh(e, "b", createdResp(0, 12))}
		},
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "a", &pb.WatchResponse{Header: hdr(12), Fragment: true, Events: []*mvccpb.Event{put("a", 11)}})}
		},
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "a", &pb.WatchResponse{Header: hdr(12), Events: []*mvccpb.Event{put("a", 12)}})}
		},
		func(e *etcdSim) []node.Input { return []node.Input{sh(e, "b", compactResp(0, 13, 13))} },
		fixed(create(3, createReqFor("d", "", 2, withID(9)))),
		func(e *etcdSim) []node.Input { return e.answer(12, true) },
		func(e *etcdSim) []node.Input { return e.answer(12, false) },
		func(e *etcdSim) []node.Input {
			return []node.Input{cu(e, "d", createdResp(0, 12)), cu(e, "d", compactResp(0, 8, 12))}
		},
		fixed(create(4, createReqFor("e", "", 0)), create(4, createReqFor("e", "", 0, withID(1)))),
		func(e *etcdSim) []node.Input { return e.retry() },
		fixed(node.Tick{Now: at(time.Second)}),
		func(e *etcdSim) []node.Input { return e.answer(12, false) },
		func(e *etcdSim) []node.Input {
			return []node.Input{sh(e, "e", etcdEvents(0, 13, "e")), sh(e, "a", etcdEvents(0, 13, "a"))}
		},
		fixed(node.Tick{Now: at(11 * time.Minute)}),
		fixed(create(3, createReqFor("a", "", 0))), // its read is served at 13...
		func(e *etcdSim) []node.Input {
			var in []node.Input
			for rev := int64(14); rev <= 17; rev++ {
				in = append(in, sh(e, "a", evResp(0, rev, putV("a", rev, val))))
			}
			return in
		},
		func(e *etcdSim) []node.Input { return e.answer(13, false) }, // ... and answered after 14..17: a catch-up watch
		func(e *etcdSim) []node.Input { return []node.Input{cu(e, "a", evResp(0, 17, put("a", 14)))} },
		func(e *etcdSim) []node.Input { return []node.Input{cu(e, "a", evResp(0, 17, put("a", 15)))} },
		fixed(written(100000, 1, 2, 3, 4)...),
		fixed(node.UpstreamLost{Upstream: port.WatchCatchUp}, node.UpstreamLost{Upstream: port.WatchShared}),
		fixed(node.CloseStream{Stream: 2}),
		fixed(node.WatchCancel{Stream: 4, WatchID: 1}, node.WatchCancel{Stream: 3, WatchID: 9}),
		fixed(node.CloseStream{Stream: 1}, node.CloseStream{Stream: 4}, node.CloseStream{Stream: 3}),
	}
}

// serializeReady writes a Ready byte for byte.
func serializeReady(b *bytes.Buffer, rd port.Ready) {
	mo := proto.MarshalOptions{Deterministic: true}
	for _, s := range rd.Sends {
		bs, err := mo.Marshal(s.Response())
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(b, "send %d %d %t %x\n", s.Stream, s.Size, s.Shared != nil, bs)
	}
	for _, u := range rd.Upstream {
		bs, err := mo.Marshal(u.Watch)
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(b, "up %v %x\n", u.Upstream, bs)
	}
	for _, f := range rd.Fetches {
		fmt.Fprintf(b, "%v\n", f)
	}
}

// runScript runs the script on a new node and returns every output, the
// inputs it fed, and the counters at the end.
func runScript(cfg node.Config) (string, []node.Input, node.Stats) {
	n := node.New(cfg, t0)
	e := &etcdSim{ids: map[string]int64{}}
	var b bytes.Buffer
	var log []node.Input
	for _, step := range determinismScript() {
		for _, in := range step(e) {
			log = append(log, in)
			n.Step(in)
			if n.HasReady() {
				rd := n.Ready()
				e.observe(rd)
				serializeReady(&b, rd)
				n.Advance()
			}
		}
	}
	return b.String(), log, n.Stats()
}

// replay feeds recorded inputs to a new node and returns every output.
func replay(cfg node.Config, log []node.Input) string {
	n := node.New(cfg, t0)
	var b bytes.Buffer
	for _, in := range log {
		n.Step(in)
		if n.HasReady() {
			serializeReady(&b, n.Ready())
			n.Advance()
		}
	}
	return b.String()
}

// The node's outputs are a function of its inputs: the recorded inputs of
// one run, fed to a new node, give the same outputs byte for byte.
func TestDeterminism(t *testing.T) {
	cfg := conf{HistoryEvents: 3, StreamBufferBytes: 200, FragmentBytes: 120, RetryInterval: 100 * time.Millisecond}.node()
	first, log, st := runScript(cfg)
	// The script must exercise the machine, not only be repeatable.
	if w := st.Watch; w.GroupsOpened < 5 || w.CatchUpsOpened < 2 || w.Merged < 1 || w.Rewinds < 1 || st.Holds < 1 || w.Compacted < 2 || w.EventsSent < 30 || w.Watchers != 0 {
		t.Errorf("script covers too little: %+v", st)
	}
	for _, want := range []string{"up watch-catch-up ", "up watch-shared ", "send 4 ", "fetch ", " true "} {
		if !strings.Contains(first, want) {
			t.Errorf("script output lacks %q", want)
		}
	}
	if again := replay(cfg, log); again != first {
		a, b := strings.Split(first, "\n"), strings.Split(again, "\n")
		for j := 0; j < len(a) && j < len(b); j++ {
			if a[j] != b[j] {
				t.Fatalf("replay differs at line %d:\n%s\n%s", j, a[j], b[j])
			}
		}
		t.Fatalf("replay differs in length: %d vs %d lines", len(a), len(b))
	}
	for _, in := range log {
		if in.String() == "" {
			t.Errorf("input %#v prints as nothing", in)
		}
	}
}

// ---- 13. namespace ----

func TestNamespace(t *testing.T) {
	h := newHarness(t, conf{Prefix: keyspace.New("p/"), HistoryEvents: 1})
	h.open(1, 2)
	h.m.OpenStream(3, "tok")
	h.create(1, "p/a", "p/c", 0, withPrevKV())
	h.create(2, "p/a", "p/c", 0)
	h.ready()
	h.answerAll(4)
	h.expectSends(h.ready(), out{1: {"w0 created rev=4"}, 2: {"w0 created rev=4"}})
	h.expectUp("shared create 1 [p/a,p/c) from 5")
	h.create(3, "p/a", "p/c", 0, withPrevKV()) // answered late: a catch-up watch
	h.ready()
	h.up(port.WatchShared, evResp(1, 5, put("p/a", 5), del("p/b", 5)))
	h.expectSends(h.ready(), out{
		1: {"w0 rev=5 [a@5 prev=a@4, DEL b@5 prev=b@4]"},
		2: {"w0 rev=5 [a@5, DEL b@5]"},
	})
	h.up(port.WatchShared, evResp(1, 6, put("p/a", 6)))
	h.ready()
	// Replay from the window: stripped once, not twice.
	h.create(2, "p/a", "p/c", 6, withPrevKV())
	h.ready()
	h.answer(h.last.Fetches[0].ID, port.FetchResult{Header: hdr(6)})
	h.expectSends(h.ready(), out{2: {"w1 created rev=6", "w1 rev=6 [a@6 prev=a@5]"}})
	// The catch-up watch.
	h.answerAll(4)
	h.expectSends(h.ready(), out{3: {"w0 created rev=4"}})
	h.expectUp("catch-up create 2 [p/a,p/c) from 5")
	h.up(port.WatchCatchUp, evResp(2, 6, put("p/a", 5), put("p/p/x", 5)))
	h.expectSends(h.ready(), out{3: {"w0 rev=6 [a@5 prev=a@4, p/x@5 prev=p/x@4]", "w0 rev=6 [a@6 prev=a@5]"}})
	h.expectUp("catch-up cancel 2")
	// A rewind.
	h.create(2, "p/a", "p/c", 3)
	h.ready()
	h.answerAll(6)
	h.ready()
	h.expectUp("shared cancel 1", "shared create 3 [p/a,p/c) from 3")
	h.up(port.WatchShared, evResp(3, 6, put("p/b", 3)))
	h.expectSends(h.ready(), out{2: {"w2 rev=6 [b@3]"}})
}

// ---- ordering of ends and progress answers ----

// A watch's cancel response goes out before a progress answer that its
// removal allows: the progress answer speaks for every watcher still on the
// stream, and the cancelled one never reached that revision.
func TestCancelResponseBeforeProgressItAllows(t *testing.T) {
	h := staleCatchUp(t, conf{HistoryEvents: 1}, 8)
	h.create(2, "b", "", 0)
	h.ready()
	h.answerAll(8)
	h.expectSends(h.ready(), out{2: {"w1 created rev=8"}})
	h.m.RequestProgress(2)
	h.ready()
	h.answerAll(8)
	h.expectSends(h.ready(), out{}) // w0 is still catching up on its catch-up watch
	h.m.Cancel(2, 0)
	h.expectSends(h.ready(), out{2: {"w0 canceled rev=8", "w-1 rev=8"}})
}

// A replay from the window that takes the stream over its bound in the
// middle of a batch must resume from where it stopped, not from the next
// batch.
func TestReplayStoppedByBoundLosesNothing(t *testing.T) {
	h := newHarness(t, conf{StreamBufferBytes: 1000})
	h.open(1, 2)
	h.create(1, "a", "", 0)
	h.ready()
	h.answerAll(4)
	h.ready()
	big := strings.Repeat("x", 40<<10)
	var evs []*mvccpb.Event
	for rev := int64(5); rev <= 10; rev++ {
		evs = append(evs, putV("a", rev, big))
	}
	h.up(port.WatchShared, evResp(1, 10, evs...))
	h.up(port.WatchShared, etcdEvents(1, 11, "a"))
	h.ready()
	h.create(2, "a", "", 5)
	h.ready()
	h.answerAll(11)
	for i := 0; i < 10; i++ {
		h.ready()
		h.ack(1)
		h.ack(2)
	}
	h.expectLog(1, revs(0, "a", 5, 11)...)
	h.expectLog(2, revs(0, "a", 5, 11)...)
}
