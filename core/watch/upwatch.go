package watch

import (
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// upWatch is the proxy's side of one upstream etcd watch, as a group and a
// catch-up watch both hold one.
type upWatch struct {
	id    int64
	start int64 // the start revision etcd was given (groups only)
	// confirmed is set once etcd has answered the create; confirmSeq is
	// the number of upstream progress requests sent on the stream before
	// that answer (see upstreamProgress).
	confirmed  bool
	confirmSeq int64
	frag       fragments
}

// upKind is what an upstream response means for its watch.
type upKind int

const (
	upNothing  upKind = iota // nothing to act on (created, a fragment, events all outside the namespace)
	upEnded                  // etcd ended the watch (compaction, or a cancel with a reason)
	upProgress               // every event up to the header's revision has been sent
	upEvents                 // a batch of whole revisions
)

// decode reads a response for an upstream watch on stream u: it confirms the
// watch's creation, reassembles fragments, strips the namespace, and tells
// what the response means.
func (m *Machine) decode(u port.UpstreamID, uw *upWatch, r *pb.WatchResponse) (upKind, *batch) {
	switch {
	case r.Canceled || r.CompactRevision != 0:
		return upEnded, nil
	case r.Created:
		uw.confirmed, uw.confirmSeq = true, m.progress[u].sent
		return upNothing, nil
	}
	evs, done := uw.frag.add(r)
	switch {
	case !done:
		return upNothing, nil
	case len(evs) == 0:
		return upProgress, nil
	}
	if evs = m.strip(evs); len(evs) == 0 {
		return upNothing, nil
	}
	m.stats.EventsReceived += int64(len(evs))
	return upEvents, newBatch(r.Header, evs)
}

// fragments reassembles an upstream response sent in fragments.
type fragments struct {
	events []*mvccpb.Event
}

// add returns the complete event list once the last fragment is in.
func (f *fragments) add(r *pb.WatchResponse) ([]*mvccpb.Event, bool) {
	if !r.Fragment && len(f.events) == 0 {
		return r.Events, true
	}
	f.events = append(f.events, r.Events...)
	if r.Fragment {
		return nil, false
	}
	evs := f.events
	f.events = nil
	return evs, true
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

func (m *Machine) upID() int64 {
	m.nextUp++
	return m.nextUp
}

// upstreamStart is the start revision of a catch-up watch, or of a group's
// with a watcher that wants progress notifications, that must bring every
// event from revision from on (other groups start at from: see
// future.go). etcd counts a watch whose start
// revision is past its current revision as not synced: it answers no
// progress request on the watch's stream and sends the watch no progress
// notification until the store gets there, which on an idle cluster is
// never. So a watch that would start just past the latest revision seen
// starts one revision earlier; the events of that revision, if any, are
// ones its watchers have had or do not want, and are skipped (a group
// records nothing at or below its revision; delivery skips what lies before
// a watcher's next revision). It never starts below floor, a revision
// etcd is known to have compacted up to.
func (m *Machine) upstreamStart(from, floor int64) int64 {
	if from > m.lastRev && from > 1 && from-1 >= floor && !fault("future-upstream-start") {
		return from - 1
	}
	return from
}

// releaseCompacted cancels an upstream watch etcd ended by compaction: etcd
// keeps such a watch on its stream (it counts it, keeps its ID, and answers
// no progress request on the stream while it is there) until the client
// cancels it, as clientv3 does.
func (m *Machine) releaseCompacted(u port.UpstreamID, id int64, r *pb.WatchResponse) {
	if r.CompactRevision != 0 && !fault("keep-compacted") {
		m.upstream(u, cancelReq(id))
	}
}

func createReq(id int64, key, end []byte, from int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: key, RangeEnd: end, StartRevision: from, PrevKv: true, ProgressNotify: true, Fragment: true, WatchId: id,
	}}}
}

func cancelReq(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

// UpstreamResponse hands in a response from one of the upstream watch
// streams.
func (m *Machine) UpstreamResponse(id port.UpstreamID, r *pb.WatchResponse) {
	u, ok := m.cfg.Lane.Kind(id)
	if !ok {
		return
	}
	switch {
	case r.Created && r.WatchId == invalidWatchID && r.Canceled:
		// etcd refused a create (the stream's token may not watch the
		// range, say) and answers without the watch's ID: creates are
		// answered in the order they were sent, so it is the oldest one
		// not answered yet. It ends its watch as a cancel with the reason.
		if len(m.unconfirmed[u]) == 0 || fault("auth-refusal-ignored") {
			return
		}
		wid := m.unconfirmed[u][0]
		m.unconfirmed[u] = m.unconfirmed[u][1:]
		r = &pb.WatchResponse{Header: r.Header, WatchId: wid, Canceled: true, CancelReason: r.CancelReason}
	case r.Created:
		if i := slices.Index(m.unconfirmed[u], r.WatchId); i >= 0 {
			m.unconfirmed[u] = slices.Delete(m.unconfirmed[u], i, i+1)
		}
	}
	m.seen(r.Header)
	if r.WatchId == invalidWatchID {
		if !r.Created && !r.Canceled && len(r.Events) == 0 && r.Header != nil {
			m.progressAnswered(u, r.Header.Revision)
		}
		return
	}
	switch u {
	case port.WatchShared:
		if g := m.shared[r.WatchId]; g != nil {
			m.groupResponse(g, r)
		}
	case port.WatchCatchUp:
		if c := m.catchUps[r.WatchId]; c != nil {
			m.catchUpResponse(c, r)
		}
	}
}

// UpstreamLost reports that upstream stream u broke; every watch on it is
// opened again on a new stream from where it stood.
func (m *Machine) UpstreamLost(id port.UpstreamID) {
	u, ok := m.cfg.Lane.Kind(id)
	if !ok {
		return
	}
	m.unconfirmed[u] = nil
	for _, s := range m.streams {
		for i := range s.upWaits {
			// The new stream's answers are all to requests sent after.
			s.upWaits[i][u] = min(s.upWaits[i][u], 1)
		}
	}
	m.progress[u] = upstreamProgress{}
	switch u {
	case port.WatchShared:
		for _, g := range m.sortedGroups() {
			delete(m.shared, g.up.id)
			from := g.rev + 1
			switch {
			case g.rewindBase != 0:
				from, g.prefix = g.base+1, nil // start the rewind over
				if fault("lost-during-rewind") {
					from = g.rev + 1
				}
			case g.upRev < g.rev && !fault("lost-after-rewind"):
				// A rewound watch past where the window began, still
				// bringing what the window holds to the watchers behind
				// it: they go on from where it stood.
				from = g.upRev + 1
			}
			if fault("duplicate-across-failover") {
				for _, w := range g.watchers {
					w.next = min(w.next, g.rev)
				}
				from = min(from, g.rev)
			}
			g.upRev = from - 1
			m.openGroupWatch(g, from, notifies(g.watchers))
		}
	case port.WatchCatchUp:
		for _, c := range m.sortedCatchUps() {
			delete(m.catchUps, c.up.id)
			w := c.w
			w.catchUp = nil
			w.next = max(w.next, c.rev+1)
			m.openCatchUp(w)
		}
	}
}

// upstream hands out a request for the lane's upstream stream of kind k
// (port.WatchShared or port.WatchCatchUp). Inside the machine upstream
// streams are named by their kind; only requests out and responses in
// carry the lane's IDs.
func (m *Machine) upstream(k port.UpstreamID, r *pb.WatchRequest) {
	if c := r.GetCreateRequest(); c != nil {
		m.unconfirmed[k] = append(m.unconfirmed[k], c.WatchId)
	}
	m.out.Upstream(port.UpstreamRequest{Upstream: m.cfg.Lane.ID(k), Watch: r})
}
