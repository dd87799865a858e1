package watch

import (
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Reasons etcd gives when it refuses a watch at creation.
const (
	reasonDuplicateID = "mvcc: duplicate watch ID provided on the WatchStream"
	reasonEmptyRange  = "mvcc: watcher range is empty"
)

// invalidWatchID is the watch ID of responses that belong to no watch.
const invalidWatchID = -1

// fetch is a revision fetch in flight or waiting to be sent.
type fetch struct {
	req      Fetch
	watchers []*watcher
	streams  []*stream // RequestProgress callers
	sent     bool
	retryAt  time.Time
}

// Machine is the watch fan-out state machine. It is not safe for concurrent
// use: one event loop owns it.
type Machine struct {
	cfg Config
	now time.Time

	streams map[StreamID]*stream
	groups  map[rangeKey]*group
	shared  map[int64]*group // by upstream watch ID
	owns    map[int64]*own
	nextUp  int64

	fetches   map[uint64]*fetch
	nextFetch uint64
	batch     *fetch // tokenless "latest revision" fetch being assembled

	// Upstream progress requests: when one was last sent, how many were
	// sent on the current stream, and how many answered. etcd answers
	// them in order and drops some, so the k-th answer is for the k-th
	// request or a later one.
	progressSentAt   [numUpstreams]time.Time
	progressSent     [numUpstreams]int64
	progressAnswered [numUpstreams]int64
	lastNotify       time.Time
	lastRev          int64              // highest revision seen anywhere
	lastHeader       *pb.ResponseHeader // cluster, member and term of the latest answer

	stats Stats
	ready Ready
}

// New returns a machine with cfg's bounds; now is the clock's reading.
func New(cfg Config, now time.Time) *Machine {
	d := DefaultConfig()
	if cfg.HistoryEvents <= 0 {
		cfg.HistoryEvents = d.HistoryEvents
	}
	if cfg.StreamBufferBytes <= 0 {
		cfg.StreamBufferBytes = d.StreamBufferBytes
	}
	if cfg.FragmentBytes <= 0 {
		cfg.FragmentBytes = d.FragmentBytes
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = d.ProgressInterval
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = d.RetryInterval
	}
	return &Machine{
		cfg: cfg, now: now, lastNotify: now,
		streams: map[StreamID]*stream{}, groups: map[rangeKey]*group{},
		shared: map[int64]*group{}, owns: map[int64]*own{}, fetches: map[uint64]*fetch{},
	}
}

// Ready returns what the caller must do and forgets it.
func (m *Machine) Ready() Ready {
	if m.batch != nil {
		m.send(m.batch)
		m.batch = nil
	}
	r := m.ready
	m.ready = Ready{}
	return r
}

// ---- client inputs ----

// OpenStream registers a client stream; token is its auth token ("" for
// none), used for the revision fetches made on its behalf.
func (m *Machine) OpenStream(id StreamID, token string) {
	m.streams[id] = &stream{id: id, token: token, watchers: map[int64]*watcher{}}
}

// CloseStream forgets a client stream and everything it watched.
func (m *Machine) CloseStream(id StreamID) {
	s := m.streams[id]
	if s == nil {
		return
	}
	for len(s.order) > 0 {
		m.drop(s.order[len(s.order)-1])
	}
	delete(m.streams, id)
}

// Create handles a client's watch create request. The request's range must
// already be in etcd's keyspace (namespace applied).
func (m *Machine) Create(id StreamID, req *pb.WatchCreateRequest) {
	s := m.streams[id]
	if s == nil || req == nil {
		return
	}
	key, end := req.Key, req.RangeEnd
	if len(key) == 0 {
		key = []byte{0} // etcd: the smallest key
	}
	if req.StartRevision < 0 {
		m.refuse(s, rpctypes.ErrCompacted.Error())
		return
	}
	if len(end) > 0 && !(len(end) == 1 && end[0] == 0) && string(key) >= string(end) {
		m.refuse(s, reasonEmptyRange)
		return
	}
	wid := req.WatchId
	if wid == 0 {
		wid = s.autoID()
	} else if s.watchers[wid] != nil {
		m.refuse(s, reasonDuplicateID)
		return
	}
	w := &watcher{
		s: s, id: wid, key: key, end: end, rk: rangeKey{string(key), string(end)},
		start: req.StartRevision, prevKV: req.PrevKv, progressNotify: req.ProgressNotify, fragment: req.Fragment,
		lastNotify: m.now,
	}
	for _, f := range req.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	s.add(w)
	s.creates = append(s.creates, pendingCreate{w: w})
	m.stats.Watchers++
	m.fetchFor(w)
}

// refuse answers a create request with etcd's refusal, in its turn: etcd
// answers the creates of a stream in the order they came.
func (m *Machine) refuse(s *stream, reason string) {
	s.creates = append(s.creates, pendingCreate{refusal: &pb.WatchResponse{Header: m.header(), WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: reason}})
	m.flushCreates(s)
}

// flushCreates answers the stream's creates whose turn has come: refusals
// at once, watchers once their revision has been fetched.
func (m *Machine) flushCreates(s *stream) {
	for len(s.creates) > 0 {
		c := s.creates[0]
		switch {
		case c.refusal != nil:
			m.reply(s, c.refusal)
		case c.w.result == nil:
			return
		default:
			m.created(c.w, *c.w.result)
		}
		s.creates[0] = pendingCreate{}
		s.creates = s.creates[1:]
	}
}

// fetchFor asks for the revision at w's creation. Tokenless requests for
// the latest revision share one fetch; others (a token to check, or a start
// revision to test for compaction) get their own.
func (m *Machine) fetchFor(w *watcher) {
	if w.s.token == "" && w.start == 0 {
		m.batchFetch().watchers = append(m.batch.watchers, w)
		return
	}
	req := Fetch{Token: w.s.token, Key: []byte{0}, Revision: w.start}
	if w.s.token != "" {
		// The read also checks the client's permission on the range.
		req.Key, req.End = w.key, w.end
	}
	f := m.newFetch(req)
	f.watchers = []*watcher{w}
	m.send(f)
}

func (m *Machine) batchFetch() *fetch {
	if m.batch == nil {
		m.batch = m.newFetch(Fetch{Key: []byte{0}})
	}
	return m.batch
}

func (m *Machine) newFetch(req Fetch) *fetch {
	m.nextFetch++
	req.ID = m.nextFetch
	f := &fetch{req: req}
	m.fetches[req.ID] = f
	return f
}

func (m *Machine) send(f *fetch) {
	f.sent = true
	m.ready.Fetches = append(m.ready.Fetches, f.req)
}

// Cancel handles a client's cancel request.
func (m *Machine) Cancel(id StreamID, watchID int64) {
	s := m.streams[id]
	if s == nil {
		return
	}
	w := s.watchers[watchID]
	if w == nil {
		return // etcd answers nothing for an unknown watch
	}
	if w.state == fetching {
		w.cancelAfterCreate = true
		return
	}
	rev, _ := w.synced()
	rev = max(rev, w.next-1, m.groupRev(w))
	m.reply(s, &pb.WatchResponse{Header: m.header(rev), WatchId: watchID, Canceled: true})
	if fault("event-after-cancel") && w.group != nil {
		return
	}
	m.drop(w)
}

func (m *Machine) groupRev(w *watcher) int64 {
	switch {
	case w.group != nil:
		return w.group.rev
	case w.own != nil:
		return w.own.rev
	}
	return 0
}

// RequestProgress handles a client's progress request: it is answered once
// every watcher on the stream has caught up with the store revision as of
// now. etcd drops a request that comes while a watcher is behind, and says
// nothing to a stream without watchers; the proxy answers every request,
// as soon as the answer is true.
func (m *Machine) RequestProgress(id StreamID) {
	s := m.streams[id]
	if s == nil {
		return
	}
	f := m.batchFetch()
	f.streams = append(f.streams, s)
}

// Sent reports that n bytes handed out for stream id have been written.
func (m *Machine) Sent(id StreamID, n int) {
	s := m.streams[id]
	if s == nil {
		return
	}
	s.queued -= n
	if s.queued < 0 {
		s.queued = 0
	}
	if s.held && s.queued <= m.cfg.StreamBufferBytes/2 {
		s.held = false
		for _, w := range append([]*watcher(nil), s.order...) {
			m.resume(w)
		}
		m.checkProgress(s)
	}
}

// ---- revision fetches ----

// Fetched hands in the answer to a Fetch.
func (m *Machine) Fetched(id uint64, r FetchResult) {
	f := m.fetches[id]
	if f == nil {
		return
	}
	if r.Retry {
		f.sent = false
		f.retryAt = m.now.Add(m.cfg.RetryInterval)
		return
	}
	delete(m.fetches, id)
	if r.Header != nil {
		m.seen(r.Header)
	}
	for _, w := range f.watchers {
		if w.s.watchers[w.id] != w {
			continue // the stream went away meanwhile
		}
		res := r
		w.result = &res
		m.flushCreates(w.s)
	}
	for _, s := range f.streams {
		if m.streams[s.id] != s {
			continue
		}
		if r.Err != nil {
			// Unanswerable: like etcd when it cannot tell, say nothing.
			continue
		}
		s.progress = append(s.progress, r.Header.GetRevision())
		m.wantProgress(s)
		m.checkProgress(s)
	}
}

// created completes a watcher's creation with the revision fetched for it.
func (m *Machine) created(w *watcher, r FetchResult) {
	s := w.s
	if r.Err != nil {
		m.reply(s, &pb.WatchResponse{Header: m.header(), WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: r.Err.Error()})
		m.drop(w)
		return
	}
	rev := r.Header.GetRevision()
	w.state = live
	if fault("stale-created") && rev > 1 {
		rev--
		r.Header = m.header(rev)
	}
	m.reply(s, &pb.WatchResponse{Header: r.Header, WatchId: w.id, Created: true})
	w.sentRev = rev
	if w.cancelAfterCreate {
		m.reply(s, &pb.WatchResponse{Header: r.Header, WatchId: w.id, Canceled: true})
		m.drop(w)
		return
	}
	w.next = w.start
	if w.start == 0 {
		w.next = rev + 1
	}
	if r.Compacted {
		// etcd tells the watcher itself, with the compaction revision.
		m.openOwn(w)
		return
	}
	g := m.groups[w.rk]
	if g == nil {
		from := min(w.next, rev+1)
		g = &group{rk: w.rk, key: w.key, end: w.end, rev: from - 1, base: from - 1}
		m.groups[w.rk] = g
		m.openGroup(g, from)
	}
	switch {
	case g.covers(w.next):
		m.join(w, g)
	case w.start != 0:
		// The fetch at w.start found it not compacted: read the group's
		// range again from there, for this watcher and any that follow,
		// rather than open a watch per watcher.
		m.rewind(g, w.next)
		m.join(w, g)
	default:
		m.openOwn(w)
	}
}

// rewind reopens g's upstream watch from an earlier revision. Events the
// group already has are delivered again only to watchers that have not
// seen them (each watcher skips what lies before its next revision); events
// older than the window are collected and put in front of it once the
// upstream watch has caught up with where the window began.
func (m *Machine) rewind(g *group, from int64) {
	if g.rewindBase == 0 {
		g.rewindBase = g.base
	}
	g.prefix = nil
	g.base = from - 1
	delete(m.shared, g.upID)
	m.ready.Upstream = append(m.ready.Upstream, UpstreamRequest{Shared, cancelReq(g.upID)})
	g.frag = fragments{}
	m.stats.Rewinds++
	m.openGroup(g, from)
}

// ---- upstream watches ----

func (m *Machine) upID() int64 {
	m.nextUp++
	return m.nextUp
}

// openGroup opens g's upstream watch from revision from.
func (m *Machine) openGroup(g *group, from int64) {
	g.upID = m.upID()
	g.upCreated = false
	m.shared[g.upID] = g
	m.stats.GroupsOpened++
	m.ready.Upstream = append(m.ready.Upstream, UpstreamRequest{Shared, createReq(g.upID, g.key, g.end, from)})
}

func createReq(id int64, key, end []byte, from int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: key, RangeEnd: end, StartRevision: from, PrevKv: true, ProgressNotify: true, Fragment: true, WatchId: id,
	}}}
}

func cancelReq(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

// openOwn gives w an upstream watch of its own from w.next.
func (m *Machine) openOwn(w *watcher) {
	o := &own{upID: m.upID(), w: w, rev: w.next - 1}
	w.own = o
	m.owns[o.upID] = o
	m.stats.OwnOpened++
	m.ready.Upstream = append(m.ready.Upstream, UpstreamRequest{Own, createReq(o.upID, w.key, w.end, w.next)})
}

func (m *Machine) closeOwn(w *watcher) {
	if o := w.own; o != nil {
		delete(m.owns, o.upID)
		w.own = nil
		m.ready.Upstream = append(m.ready.Upstream, UpstreamRequest{Own, cancelReq(o.upID)})
	}
}

// join adds w to g and replays what the window holds from w.next on.
func (m *Machine) join(w *watcher, g *group) {
	w.group = g
	g.watchers = append(g.watchers, w)
	m.replay(w, g)
}

// replay gives w what g holds from w.next on; the rest reaches it live. A
// watcher behind a rewind gets only what the rewound upstream watch has
// brought so far: the window would skip the part still to come. Replay
// stops where the stream goes over its bound.
func (m *Machine) replay(w *watcher, g *group) {
	held := g.window
	if g.rewindBase != 0 && w.next <= g.rewindBase {
		held = g.prefix
	}
	for _, b := range held {
		if w.s.held {
			return
		}
		if b.last >= w.next {
			m.deliver(w, b)
		}
	}
}

// leave takes w out of its group, closing the group when it was the last.
func (m *Machine) leave(w *watcher) {
	g := w.group
	if g == nil {
		return
	}
	w.group = nil
	g.remove(w)
	if len(g.watchers) == 0 {
		delete(m.groups, g.rk)
		delete(m.shared, g.upID)
		if fault("leak-upstream") {
			return
		}
		m.ready.Upstream = append(m.ready.Upstream, UpstreamRequest{Shared, cancelReq(g.upID)})
	}
}

// drop forgets a watcher entirely. Responses that end the watch must be
// queued before it: dropping may answer a progress request.
func (m *Machine) drop(w *watcher) {
	m.leave(w)
	m.closeOwn(w)
	w.s.remove(w)
	m.stats.Watchers--
	// A progress request may have been waiting only for this watcher.
	m.checkProgress(w.s)
}

// resume puts a watcher of a stream that has drained back on track: from
// its group's window if that still reaches back to its next revision, else
// from an upstream watch of its own.
func (m *Machine) resume(w *watcher) {
	if w.state != live || w.own != nil {
		return // still waiting, or its own upstream watch never stopped
	}
	if g := w.group; g != nil && g.covers(w.next) {
		m.replay(w, g)
		return
	}
	m.leave(w)
	if g := m.groups[w.rk]; g != nil && g.covers(w.next) {
		m.join(w, g)
		return
	}
	m.openOwn(w)
}

// Upstream hands in a response from one of the upstream watch streams.
func (m *Machine) Upstream(u Upstream, r *pb.WatchResponse) {
	m.seen(r.Header)
	if r.WatchId == invalidWatchID {
		if !r.Created && !r.Canceled && len(r.Events) == 0 && r.Header != nil {
			m.progressAll(u, r.Header.Revision)
		}
		return
	}
	if u == Shared {
		if g := m.shared[r.WatchId]; g != nil {
			m.groupResponse(g, r)
		}
		return
	}
	if o := m.owns[r.WatchId]; o != nil {
		m.ownResponse(o, r)
	}
}

// progressAll handles a progress notification for every watch on stream u:
// etcd sends it only when all of them have been sent every event up to rev.
func (m *Machine) progressAll(u Upstream, rev int64) {
	m.progressAnswered[u]++
	k := m.progressAnswered[u]
	// The answer speaks for a watch only if its request went out after
	// etcd confirmed the watch's creation: an earlier request may have
	// been answered before the watch existed. (etcd's created responses
	// and progress answers travel on different channels inside etcd, so
	// their order on the stream proves nothing.)
	if u == Shared {
		for _, g := range m.sortedGroups() {
			if g.upCreated && k > g.confirmSeq {
				g.progress(rev, m.cfg.HistoryEvents)
			}
		}
	} else {
		for _, o := range m.owns {
			if o.created && k > o.confirmSeq && rev > o.rev {
				o.rev = rev
			}
		}
		m.mergeOwns()
	}
	m.checkAllProgress()
}

func (m *Machine) groupResponse(g *group, r *pb.WatchResponse) {
	if r.Canceled || r.CompactRevision != 0 {
		m.groupEnded(g, r)
		return
	}
	if r.Created {
		g.upCreated, g.confirmSeq = true, m.progressSent[Shared]
		return
	}
	evs, done := g.frag.add(r)
	if !done {
		return
	}
	if len(evs) == 0 {
		// A per-watch progress notification.
		if r.Header != nil {
			g.progress(r.Header.Revision, m.cfg.HistoryEvents)
			m.checkAllProgress()
		}
		return
	}
	evs = m.strip(evs)
	if len(evs) == 0 {
		return
	}
	b := newBatch(r.Header, evs)
	if g.rewindBase != 0 {
		g.recordRewound(b, m.cfg.HistoryEvents)
	} else {
		g.record(b, m.cfg.HistoryEvents)
	}
	m.stats.EventsReceived += int64(len(evs))
	for _, w := range g.watchers {
		if w.s.held {
			continue
		}
		m.deliver(w, b)
	}
	m.checkAllProgress()
}

// groupEnded handles etcd ending a group's upstream watch: compaction, or a
// cancel with a reason. Watchers that etcd would have ended too get etcd's
// response; the rest move to a new group.
func (m *Machine) groupEnded(g *group, r *pb.WatchResponse) {
	delete(m.shared, g.upID)
	delete(m.groups, g.rk)
	watchers := g.watchers
	g.watchers = nil
	var survivors []*watcher
	for _, w := range watchers {
		w.group = nil
		if r.CompactRevision != 0 && w.next >= r.CompactRevision {
			survivors = append(survivors, w)
			continue
		}
		m.endWatcher(w, r)
	}
	if len(survivors) > 0 {
		from := survivors[0].next
		for _, w := range survivors {
			from = min(from, w.next)
		}
		ng := &group{rk: g.rk, key: g.key, end: g.end, rev: from - 1, base: from - 1}
		m.groups[g.rk] = ng
		m.openGroup(ng, from)
		for _, w := range survivors {
			m.join(w, ng)
		}
	}
}

// endWatcher passes etcd's end of a watch (compaction or cancel) on to w.
func (m *Machine) endWatcher(w *watcher, r *pb.WatchResponse) {
	s := w.s
	resp := &pb.WatchResponse{Header: r.Header, WatchId: w.id, Canceled: true, CompactRevision: r.CompactRevision, CancelReason: r.CancelReason}
	if r.CompactRevision != 0 {
		m.stats.Compacted++
	}
	// The end goes out before anything that dropping the watcher sets off.
	m.reply(s, resp)
	m.drop(w)
}

func (m *Machine) ownResponse(o *own, r *pb.WatchResponse) {
	w := o.w
	if r.Canceled || r.CompactRevision != 0 {
		m.endWatcher(w, r)
		return
	}
	if r.Created {
		o.created, o.confirmSeq = true, m.progressSent[Own]
		return
	}
	evs, done := o.frag.add(r)
	if !done {
		return
	}
	if len(evs) == 0 {
		if r.Header != nil && r.Header.Revision > o.rev {
			o.rev = r.Header.Revision
		}
	} else {
		if evs = m.strip(evs); len(evs) > 0 {
			b := newBatch(r.Header, evs)
			o.rev = max(o.rev, b.last)
			m.stats.EventsReceived += int64(len(evs))
			if !w.s.held {
				m.deliver(w, b)
			}
		}
	}
	if w.s.held {
		// Held streams receive nothing: let the upstream watch go and pick
		// up again from w.next when the stream drains.
		m.closeOwn(w)
		return
	}
	m.mergeOwn(o)
	m.checkProgress(w.s)
}

// mergeOwn moves a watcher from its own upstream watch into its range's
// group once the group's window reaches back to what the watcher has seen.
func (m *Machine) mergeOwn(o *own) {
	w := o.w
	g := m.groups[w.rk]
	if g == nil || !g.covers(w.next) || w.own != o {
		return
	}
	m.closeOwn(w)
	m.stats.Merged++
	m.join(w, g)
}

func (m *Machine) mergeOwns() {
	ids := make([]int64, 0, len(m.owns))
	for id := range m.owns {
		ids = append(ids, id)
	}
	sortInt64s(ids)
	for _, id := range ids {
		if o := m.owns[id]; o != nil {
			m.mergeOwn(o)
		}
	}
}

// UpstreamLost reports that upstream stream u broke; every watch on it is
// opened again on a new stream from where it stood.
func (m *Machine) UpstreamLost(u Upstream) {
	m.progressSentAt[u] = time.Time{}
	m.progressSent[u], m.progressAnswered[u] = 0, 0
	if u == Shared {
		for _, g := range m.sortedGroups() {
			delete(m.shared, g.upID)
			g.frag = fragments{}
			from := g.rev + 1
			if g.rewindBase != 0 {
				from, g.prefix = g.base+1, nil // start the rewind over
			}
			if fault("duplicate-across-failover") {
				for _, w := range g.watchers {
					w.next = min(w.next, g.rev)
				}
				from = min(from, g.rev)
			}
			m.openGroup(g, from)
		}
		return
	}
	ids := make([]int64, 0, len(m.owns))
	for id := range m.owns {
		ids = append(ids, id)
	}
	sortInt64s(ids)
	for _, id := range ids {
		o := m.owns[id]
		delete(m.owns, id)
		w := o.w
		w.own = nil
		w.next = max(w.next, o.rev+1)
		m.openOwn(w)
	}
}

// ---- delivery ----

// chunkBytes is how many bytes of events go into one response before the
// stream's bound is checked again, so that a large batch cannot take a
// held stream far past its bound.
const chunkBytes = 64 << 10

// deliver sends w the events of b it has not seen yet, a chunk of whole
// revisions at a time; it stops early if the stream goes over its bound,
// leaving w.next at the first revision not sent.
func (m *Machine) deliver(w *watcher, b *batch) {
	if b.last < w.next {
		return
	}
	evs, sizes := b.variant(w.prevKV)
	i := 0
	for i < len(evs) && evs[i].Kv.ModRevision < w.next {
		i++
	}
	// The encoded size of the response, field by field, as protobuf
	// lays it out: header (1), watch_id (2), events (11).
	base := 0
	if b.header != nil {
		base += protowire.SizeTag(1) + protowire.SizeBytes(b.headerSize)
	}
	if w.id != 0 {
		base += protowire.SizeTag(2) + protowire.SizeVarint(uint64(w.id))
	}
	// Without filters a chunk is a run of the batch's own slice, the same
	// slice for every watcher that gets it, so that the shell can encode it
	// once for all of them; with filters it is a slice of its own.
	filtering := w.noPut || w.noDelete
	var chunk []*mvccpb.Event
	start := i
	size := base
	for i < len(evs) {
		rev := evs[i].Kv.ModRevision
		for ; i < len(evs) && evs[i].Kv.ModRevision == rev; i++ {
			if fault("skip-event") && rev%7 == 3 {
				filtering = true
				continue
			}
			if w.passes(evs[i]) {
				if filtering {
					chunk = append(chunk, evs[i])
				}
				size += protowire.SizeTag(11) + protowire.SizeBytes(sizes[i])
			}
		}
		w.next = rev + 1
		if size >= chunkBytes || i == len(evs) {
			if !filtering {
				chunk = evs[start:i:i]
			}
			m.sendEvents(w, b.header, chunk, size)
			chunk, size, start = nil, base, i
			if w.s.held && i < len(evs) {
				return
			}
		}
	}
}

// sendEvents hands a watcher's events to its stream, in fragments if it asked
// for them and they are too large for one response.
func (m *Machine) sendEvents(w *watcher, h *pb.ResponseHeader, evs []*mvccpb.Event, size int) {
	if len(evs) == 0 {
		return
	}
	w.eventsSinceNotify = true
	w.sentRev = max(w.sentRev, h.GetRevision())
	m.stats.EventsSent += int64(len(evs))
	resp := &pb.WatchResponse{Header: h, WatchId: w.id, Events: evs}
	if !w.fragment || size <= m.cfg.FragmentBytes {
		m.replySized(w.s, resp, size)
		return
	}
	for _, part := range fragment(resp, m.cfg.FragmentBytes) {
		m.reply(w.s, part)
	}
}

// reply queues a response for a client stream and holds the stream back
// once it is over its buffer bound.
func (m *Machine) reply(s *stream, r *pb.WatchResponse) {
	m.replySized(s, r, proto.Size(r))
}

// replySized is reply with the response's encoded size known already.
func (m *Machine) replySized(s *stream, r *pb.WatchResponse, size int) {
	m.ready.Sends = append(m.ready.Sends, Send{Stream: s.id, Resp: r, Size: size})
	s.queued += size
	if !s.held && s.queued > m.cfg.StreamBufferBytes {
		s.held = true
		m.stats.Held++
	}
}

// strip removes the namespace prefix from event keys.
func (m *Machine) strip(evs []*mvccpb.Event) []*mvccpb.Event {
	if m.cfg.Prefix.Empty() {
		return evs
	}
	out := evs[:0]
	for _, ev := range evs {
		if ev.Kv == nil || !m.cfg.Prefix.Contains(ev.Kv.Key) {
			continue
		}
		m.cfg.Prefix.KeyValue(ev.Kv)
		m.cfg.Prefix.KeyValue(ev.PrevKv)
		out = append(out, ev)
	}
	return out
}

// ---- progress ----

// wantProgress asks etcd for progress on the upstream streams that s
// depends on now, unless it was asked there very recently.
func (m *Machine) wantProgress(s *stream) {
	var need [numUpstreams]bool
	m.progressNeeds(s, &need)
	m.requestProgressOn(need)
}

// progressNeeds marks the upstream streams whose progress the watchers of
// s wait for. It is worked out afresh each time: watchers move between
// their group and an upstream watch of their own.
func (m *Machine) progressNeeds(s *stream, need *[numUpstreams]bool) {
	if len(s.progress) == 0 {
		return
	}
	for _, w := range s.order {
		switch {
		case w.own != nil:
			need[Own] = true
		case w.group != nil:
			need[Shared] = true
		}
	}
}

func (m *Machine) requestProgressOn(need [numUpstreams]bool) {
	for u := Upstream(0); u < numUpstreams; u++ {
		if need[u] && (m.progressSentAt[u].IsZero() || !m.now.Before(m.progressSentAt[u].Add(m.cfg.RetryInterval))) {
			m.requestUpstreamProgress(u)
		}
	}
}

func (m *Machine) requestUpstreamProgress(u Upstream) {
	m.progressSentAt[u] = m.now
	m.progressSent[u]++
	m.ready.Upstream = append(m.ready.Upstream, UpstreamRequest{u, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}})
}

func (m *Machine) anyProgressPending() bool {
	for _, s := range m.streams {
		if len(s.progress) > 0 {
			return true
		}
	}
	return false
}

func (m *Machine) checkAllProgress() {
	if !m.anyProgressPending() {
		return
	}
	for _, s := range m.sortedStreams() {
		m.checkProgress(s)
	}
}

// checkProgress answers the stream's progress requests whose revision every
// watcher on the stream has reached.
func (m *Machine) checkProgress(s *stream) {
	for len(s.progress) > 0 {
		want := s.progress[0]
		for _, w := range s.order {
			if rev, ok := w.synced(); !ok || rev < want {
				return
			}
		}
		s.progress = s.progress[1:]
		m.reply(s, &pb.WatchResponse{Header: m.header(want), WatchId: invalidWatchID})
	}
}

// ---- time ----

// Tick advances the machine's clock: unanswered progress requests and failed
// fetches are retried, and idle watchers that asked for progress
// notifications get one.
func (m *Machine) Tick(now time.Time) {
	m.now = now
	var need [numUpstreams]bool
	for _, s := range m.sortedStreams() {
		m.progressNeeds(s, &need)
	}
	m.requestProgressOn(need)
	var retry []uint64
	for id, f := range m.fetches {
		if !f.sent && f != m.batch && !now.Before(f.retryAt) {
			retry = append(retry, id)
		}
	}
	sortUint64s(retry)
	for _, id := range retry {
		m.send(m.fetches[id])
	}
	if now.Sub(m.lastNotify) >= m.cfg.ProgressInterval {
		m.lastNotify = now
		for _, s := range m.sortedStreams() {
			for _, w := range s.order {
				if !w.progressNotify {
					continue
				}
				if w.eventsSinceNotify {
					w.eventsSinceNotify = false
					continue
				}
				// Never a revision below one the watcher has been told:
				// a watcher still catching up gets nothing, as from etcd.
				if rev, ok := w.synced(); ok && rev >= w.sentRev {
					m.reply(s, &pb.WatchResponse{Header: m.header(rev), WatchId: w.id})
					w.sentRev = rev
				}
			}
		}
	}
}

// ---- helpers ----

func (m *Machine) seen(h *pb.ResponseHeader) {
	if h == nil {
		return
	}
	m.lastHeader = h
	if h.Revision > m.lastRev {
		m.lastRev = h.Revision
	}
}

// header returns etcd's response header as of revision rev (the latest seen
// when rev is 0).
func (m *Machine) header(rev ...int64) *pb.ResponseHeader {
	h := &pb.ResponseHeader{Revision: m.lastRev}
	if m.lastHeader != nil {
		h.ClusterId, h.MemberId, h.RaftTerm = m.lastHeader.ClusterId, m.lastHeader.MemberId, m.lastHeader.RaftTerm
	}
	if len(rev) > 0 {
		h.Revision = rev[0]
	}
	return h
}

func (m *Machine) sortedGroups() []*group {
	ids := make([]int64, 0, len(m.shared))
	for id := range m.shared {
		ids = append(ids, id)
	}
	sortInt64s(ids)
	out := make([]*group, len(ids))
	for i, id := range ids {
		out[i] = m.shared[id]
	}
	return out
}

func (m *Machine) sortedStreams() []*stream {
	ids := make([]uint64, 0, len(m.streams))
	for id := range m.streams {
		ids = append(ids, uint64(id))
	}
	sortUint64s(ids)
	out := make([]*stream, len(ids))
	for i, id := range ids {
		out[i] = m.streams[StreamID(id)]
	}
	return out
}
