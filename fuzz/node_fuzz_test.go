package fuzz

import (
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/watch"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

// FuzzNode feeds the composite core a sequence of inputs decoded from the
// fuzzer's bytes: client watch streams with and without tokens opening,
// creating (any range, start revision, ID and options), cancelling, asking
// for progress, reading and closing; revision fetches answered at any
// revision or with etcd's errors; etcd's side answering creates, sending
// events (whole or in fragments), progress, compactions and refusals, and
// streams breaking; time passing. After every step it checks what the node
// hands out: responses only for open streams, upstream requests only on
// streams the node started, the stream count it reports. At the end every
// stream closes and every fetch is answered: the core must then hold
// nothing. A panic anywhere fails the target.
func FuzzNode(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 1, 0, 1, 5, 6, 7, 10, 4},
		{0, 0, 1, 0, 2, 1, 1, 5, 0, 6, 0, 7, 1, 7, 2, 8, 3, 9, 0, 10, 4, 0},
		{0, 1, 1, 1, 1, 3, 5, 1, 6, 2, 12, 0, 9, 1, 6, 0, 5, 2, 11, 9},
		{0, 2, 1, 0, 0, 5, 0, 6, 0, 7, 0, 1, 0, 4, 8, 5, 3, 6, 1, 7, 3, 12, 1, 2, 1},
		[]byte("a fuzzer starts from here and goes anywhere"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := &bytesDecoder{b: data}
		h := newNodeHarness(t, d)
		for steps := 0; !d.done() && steps < 400; steps++ {
			h.stepFrom(d)
		}
		h.closeAll()
		if held := testutil.NodeEmpty(h.n.Stats(), h.n.Gauges()); held != "" {
			t.Fatalf("left behind after every stream closed and every fetch was answered: %s\ninputs:\n%s", held, h.log)
		}
	})
}

// bytesDecoder reads small choices from the fuzzer's bytes (zero once they
// run out).
type bytesDecoder struct {
	b []byte
	i int
}

func (d *bytesDecoder) done() bool { return d.i >= len(d.b) }

func (d *bytesDecoder) byte() byte {
	if d.done() {
		return 0
	}
	c := d.b[d.i]
	d.i++
	return c
}

func (d *bytesDecoder) intn(n int) int { return int(d.byte()) % n }

// nodeHarness plays the shell and etcd around one node.
type nodeHarness struct {
	t   *testing.T
	n   *node.Node
	now time.Time
	rev int64 // etcd's store revision
	log *inputLog

	nextStream port.StreamID
	open       []port.StreamID          // client watch streams open, in order
	queued     map[port.StreamID]int    // bytes handed out and not reported written
	fetches    []port.Fetch             // fetches handed out and not answered
	ups        map[port.UpstreamID]bool // upstream watch streams the node started
	creates    map[port.UpstreamID][]int64
	watches    map[port.UpstreamID][]upWatch
}

type upWatch struct {
	id       int64
	key, end []byte
}

type inputLog struct{ lines []string }

func (l *inputLog) String() string {
	s := ""
	for _, x := range l.lines {
		s += x + "\n"
	}
	return s
}

var t0 = time.Unix(1_000_000, 0)

func newNodeHarness(t *testing.T, d *bytesDecoder) *nodeHarness {
	watchCfg := watch.Config{HistoryEvents: 1 + d.intn(8), FragmentBytes: 64 + 16*d.intn(16)}
	// One byte sets both buffer bounds, so that inputs written before the
	// total bound existed decode as they did.
	k := d.intn(20)
	cfg := node.Config{
		Watch: watchCfg,
		Port:  port.Config{StreamBufferBytes: 100 + 50*k, TotalBufferBytes: (100 + 50*k) * (1 + k%4), RetryInterval: 100 * time.Millisecond},
	}
	h := &nodeHarness{
		t: t, n: node.New(cfg, t0), now: t0, rev: 1, log: &inputLog{},
		queued: map[port.StreamID]int{}, ups: map[port.UpstreamID]bool{port.WatchShared: true, port.WatchCatchUp: true},
		creates: map[port.UpstreamID][]int64{}, watches: map[port.UpstreamID][]upWatch{},
	}
	h.drain()
	return h
}

// step feeds one input and carries out what the node asks.
func (h *nodeHarness) step(in node.Input) {
	h.log.lines = append(h.log.lines, in.String())
	h.n.Step(in)
	h.drain()
}

func (h *nodeHarness) isOpen(id port.StreamID) bool {
	for _, o := range h.open {
		if o == id {
			return true
		}
	}
	return false
}

// drain takes the node's Ready, checks it, and records what etcd's side
// and the clients now hold.
func (h *nodeHarness) drain() {
	for h.n.HasReady() {
		rd := h.n.Ready()
		for _, l := range rd.Lanes {
			h.ups[l.Lane.Shared], h.ups[l.Lane.CatchUp] = true, true
		}
		for _, s := range rd.Sends {
			if !h.isOpen(s.Stream) {
				h.t.Fatalf("a response for stream %d, which is not open: %v\ninputs:\n%s", s.Stream, s.Response(), h.log)
			}
			h.queued[s.Stream] += s.Size
		}
		for _, u := range rd.Upstream {
			if u.Upstream == port.LeaseKeepAlive {
				continue
			}
			if !h.ups[u.Upstream] {
				h.t.Fatalf("a request on %v, which the node never started: %v", u.Upstream, u.Watch)
			}
			switch {
			case u.Watch.GetCreateRequest() != nil:
				c := u.Watch.GetCreateRequest()
				h.creates[u.Upstream] = append(h.creates[u.Upstream], c.WatchId)
				h.watches[u.Upstream] = append(h.watches[u.Upstream], upWatch{c.WatchId, c.Key, c.RangeEnd})
			case u.Watch.GetCancelRequest() != nil:
				id := u.Watch.GetCancelRequest().WatchId
				ws := h.watches[u.Upstream][:0]
				for _, w := range h.watches[u.Upstream] {
					if w.id != id {
						ws = append(ws, w)
					}
				}
				h.watches[u.Upstream] = ws
			}
		}
		for _, e := range rd.LaneEnds {
			delete(h.ups, e.Lane.Shared)
			delete(h.ups, e.Lane.CatchUp)
		}
		for _, e := range rd.Ends {
			h.drop(e.Stream)
		}
		h.fetches = append(h.fetches, rd.Fetches...)
		h.n.Advance()
	}
	if got := h.n.Gauges().Watch.Streams; got != len(h.open) {
		h.t.Fatalf("the node reports %d watch streams, %d are open", got, len(h.open))
	}
}

func (h *nodeHarness) drop(id port.StreamID) {
	for i, o := range h.open {
		if o == id {
			h.open = append(h.open[:i:i], h.open[i+1:]...)
			delete(h.queued, id)
			return
		}
	}
}

var fuzzKeys = [][]byte{[]byte("a"), []byte("b"), []byte("c"), {0}}

// stepFrom decodes one action and takes it.
func (h *nodeHarness) stepFrom(d *bytesDecoder) {
	stream := func() (port.StreamID, bool) {
		if len(h.open) == 0 {
			return 0, false
		}
		return h.open[d.intn(len(h.open))], true
	}
	upstream := func() (port.UpstreamID, bool) {
		var ids []port.UpstreamID
		for u := port.UpstreamID(0); u < 64; u++ {
			if h.ups[u] && (u == port.WatchShared || u == port.WatchCatchUp || u >= port.NumUpstreams) {
				ids = append(ids, u)
			}
		}
		if len(ids) == 0 {
			return 0, false
		}
		return ids[d.intn(len(ids))], true
	}
	hdr := func() *pb.ResponseHeader { return &pb.ResponseHeader{Revision: h.rev} }
	switch d.intn(13) {
	case 0: // a client stream opens, with a token or not
		h.nextStream++
		tok := []string{"", "t1", "t2"}[d.intn(3)]
		in := node.OpenStream{Stream: h.nextStream, Token: tok}
		if tok != "" {
			in.Identity = "user:" + tok
		}
		h.open = append(h.open, h.nextStream)
		h.step(in)
	case 1: // a create, with any range, start, ID and options
		s, ok := stream()
		if !ok {
			return
		}
		req := &pb.WatchCreateRequest{Key: fuzzKeys[d.intn(4)]}
		switch d.intn(4) {
		case 1:
			req.RangeEnd = []byte{0}
		case 2:
			req.RangeEnd = fuzzKeys[d.intn(4)]
		}
		if d.intn(2) == 1 {
			req.StartRevision = int64(d.intn(int(h.rev)+4)) - 1
		}
		req.WatchId = int64(d.intn(4))
		flags := d.byte()
		req.PrevKv, req.ProgressNotify, req.Fragment = flags&1 != 0, flags&2 != 0, flags&4 != 0
		if flags&8 != 0 {
			req.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
		}
		h.step(node.WatchCreate{Stream: s, Req: req})
	case 2:
		if s, ok := stream(); ok {
			h.step(node.WatchCancel{Stream: s, WatchID: int64(d.intn(5)) - 1})
		}
	case 3:
		if s, ok := stream(); ok {
			h.step(node.WatchProgress{Stream: s})
		}
	case 4:
		if s, ok := stream(); ok {
			h.drop(s)
			h.step(node.CloseStream{Stream: s})
		}
	case 5: // a fetch answered: at the revision, or with one of etcd's errors
		if len(h.fetches) == 0 {
			return
		}
		i := d.intn(len(h.fetches))
		f := h.fetches[i]
		h.fetches = append(h.fetches[:i:i], h.fetches[i+1:]...)
		res := port.FetchResult{Header: hdr()}
		switch d.intn(6) {
		case 1:
			res = port.FetchResult{Err: rpctypes.ErrGRPCCompacted}
		case 2:
			res = port.FetchResult{Err: rpctypes.ErrGRPCFutureRev}
		case 3:
			res = port.FetchResult{Err: rpctypes.ErrGRPCPermissionDenied}
		case 4:
			res = port.FetchResult{Err: rpctypes.ErrGRPCNoLeader}
		}
		h.step(node.Fetched{ID: f.ID, Result: res})
	case 6: // etcd answers the oldest create on a stream: created, or refused
		u, ok := upstream()
		if !ok || len(h.creates[u]) == 0 {
			return
		}
		id := h.creates[u][0]
		h.creates[u] = h.creates[u][1:]
		r := &pb.WatchResponse{Header: hdr(), WatchId: id, Created: true}
		switch d.intn(6) {
		case 4:
			r = &pb.WatchResponse{Header: hdr(), WatchId: -1, Created: true, Canceled: true, CancelReason: rpctypes.ErrGRPCPermissionDenied.Error()}
		case 5:
			r = &pb.WatchResponse{Header: hdr(), WatchId: -1, Created: true, Canceled: true, CancelReason: rpctypes.ErrGRPCInvalidAuthToken.Error()}
		}
		h.step(node.UpstreamResponse{Upstream: u, Watch: r})
	case 7: // a write: its event to one watch on a stream, whole or in fragments
		u, ok := upstream()
		h.rev++
		if !ok || len(h.watches[u]) == 0 {
			return
		}
		w := h.watches[u][d.intn(len(h.watches[u]))]
		n := 1 + d.intn(3)
		var evs []*mvccpb.Event
		for range n {
			evs = append(evs, &mvccpb.Event{Type: mvccpb.Event_EventType(d.intn(2)), Kv: &mvccpb.KeyValue{Key: w.key, ModRevision: h.rev, Value: make([]byte, d.intn(64))}})
		}
		if d.intn(2) == 0 || n == 1 {
			h.step(node.UpstreamResponse{Upstream: u, Watch: &pb.WatchResponse{Header: hdr(), WatchId: w.id, Events: evs}})
			return
		}
		for i, ev := range evs {
			h.step(node.UpstreamResponse{Upstream: u, Watch: &pb.WatchResponse{Header: hdr(), WatchId: w.id, Events: []*mvccpb.Event{ev}, Fragment: i < len(evs)-1}})
		}
	case 8: // progress: for the stream, or for one watch
		u, ok := upstream()
		if !ok {
			return
		}
		id := int64(-1)
		if ws := h.watches[u]; len(ws) > 0 && d.intn(2) == 0 {
			id = ws[d.intn(len(ws))].id
		}
		h.step(node.UpstreamResponse{Upstream: u, Watch: &pb.WatchResponse{Header: hdr(), WatchId: id}})
	case 9: // a stream breaks: etcd forgets its watches
		u, ok := upstream()
		if !ok {
			return
		}
		h.creates[u], h.watches[u] = nil, nil
		h.step(node.UpstreamLost{Upstream: u, Token: []string{"", "t1", "t2"}[d.intn(3)]})
	case 10:
		if s, ok := stream(); ok && h.queued[s] > 0 {
			n := h.queued[s]
			h.queued[s] = 0
			h.step(node.Written{Stream: s, Bytes: n})
		}
	case 11:
		h.now = h.now.Add(time.Duration(d.intn(40)) * 100 * time.Millisecond)
		h.step(node.Tick{Now: h.now})
	case 12: // etcd ends a watch: compaction, or a cancel with a reason
		u, ok := upstream()
		if !ok || len(h.watches[u]) == 0 {
			return
		}
		i := d.intn(len(h.watches[u]))
		w := h.watches[u][i]
		h.watches[u] = append(h.watches[u][:i:i], h.watches[u][i+1:]...)
		r := &pb.WatchResponse{Header: hdr(), WatchId: w.id, Canceled: true, CompactRevision: int64(d.intn(int(h.rev) + 1))}
		if r.CompactRevision == 0 {
			r.CancelReason = rpctypes.ErrGRPCPermissionDenied.Error()
		}
		h.step(node.UpstreamResponse{Upstream: u, Watch: r})
	}
}

// closeAll closes every stream and answers every fetch, as many times as
// the node asks again.
func (h *nodeHarness) closeAll() {
	for len(h.open) > 0 {
		s := h.open[0]
		h.drop(s)
		h.step(node.CloseStream{Stream: s})
	}
	// A fetch that failed for a transport reason is asked again after the
	// retry interval: time passes until etcd has answered them all.
	for i := 0; (len(h.fetches) > 0 || h.n.Gauges().Flow.PendingFetches > 0) && i < 1000; i++ {
		if len(h.fetches) == 0 {
			h.now = h.now.Add(200 * time.Millisecond)
			h.step(node.Tick{Now: h.now})
			continue
		}
		f := h.fetches[0]
		h.fetches = h.fetches[1:]
		h.step(node.Fetched{ID: f.ID, Result: port.FetchResult{Header: &pb.ResponseHeader{Revision: h.rev}}})
	}
}
