package watch

import (
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// Reasons etcd gives when it refuses a watch at creation.
const (
	reasonDuplicateID = "mvcc: duplicate watch ID provided on the WatchStream"
	reasonEmptyRange  = "mvcc: watcher range is empty"
)

// ReasonTooManyWatches is the cancel reason of a create refused because
// its stream holds MaxWatchersPerStream watches already (%d: the limit).
const ReasonTooManyWatches = "etcdproxy: too many watches on this stream (limit --max-watches-per-stream=%d)"

// invalidWatchID is the watch ID of responses that belong to no watch.
const invalidWatchID = -1

// Create handles a client's watch create request. The request's range must
// already be in etcd's keyspace (namespace applied).
func (m *Machine) Create(id port.StreamID, req *pb.WatchCreateRequest) {
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
	w := &watcher{
		s: s, chosen: req.WatchId, key: key, end: end, rk: rangeKey{string(key), string(end)},
		start: req.StartRevision, prevKV: req.PrevKv, progressNotify: req.ProgressNotify, fragment: req.Fragment,
	}
	for _, f := range req.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	if w.chosen != 0 && s.watchers[w.chosen] != nil && !s.cancelling(w.chosen) {
		// Taken, and nothing queued can free it before this create's turn.
		m.refuse(s, reasonDuplicateID)
		return
	}
	if limit := m.cfg.MaxWatchersPerStream; limit > 0 && len(s.watchers)+s.creates >= limit {
		m.refuse(s, fmt.Sprintf(ReasonTooManyWatches, limit))
		return
	}
	s.queue = append(s.queue, request{create: w})
	s.creates++
	m.stats.Watchers++
	m.fetchFor(w, w.start)
}

// refuse answers a create request with etcd's refusal, in its turn.
func (m *Machine) refuse(s *stream, reason string) {
	s.queue = append(s.queue, request{refusal: reason})
	m.flushQueue(s)
}

// fetchFor asks for the store revision at w's creation. The read is at rev
// (the start revision, to learn whether etcd has compacted it; 0 for the
// latest) and, for a client with a token, on the watched range, so that it
// also checks the client's permission. Plain reads of the latest revision
// share one fetch per step.
func (m *Machine) fetchFor(w *watcher, rev int64) {
	f := port.Fetch{Token: w.s.token, Key: []byte{0}, Revision: rev}
	if w.s.token != "" {
		f.Key, f.End = w.key, w.end
	}
	if fault("auth-skip-create-check") {
		f = port.Fetch{Key: []byte{0}, Revision: rev} // the proxy's own read, not the client's
	}
	w.fetch = m.out.Fetch(port.Watch, f)
	ws := m.waitersOf(w.fetch)
	ws.watchers = append(ws.watchers, w)
}

func (m *Machine) waitersOf(id port.FetchID) *waiters {
	if m.fetches[id] == nil {
		m.fetches[id] = &waiters{}
	}
	return m.fetches[id]
}

// Fetched hands in the answer to a revision fetch the machine asked for.
func (m *Machine) Fetched(id port.FetchID, r port.FetchResult) {
	f := m.fetches[id]
	if f == nil {
		return
	}
	delete(m.fetches, id)
	m.seen(r.Header)
	for _, w := range f.watchers {
		if w.state != fetching || w.fetch != id || w.s.closed {
			continue
		}
		compacted := errors.Is(r.Err, rpctypes.ErrGRPCCompacted)
		if w.start != 0 && !w.reread && (compacted || errors.Is(r.Err, rpctypes.ErrGRPCFutureRev)) {
			// The start revision is compacted, or in the future: the
			// revision at creation still has to be read.
			w.compacted, w.reread = compacted, true
			m.fetchFor(w, 0)
			continue
		}
		res := r
		w.result = &res
		if m.checked() && w.s.queue[0].create != w {
			// Not its turn yet: open the group it will need now, so that
			// etcd checks the stream's creates in one round trip.
			m.awaitUpstream(w, false)
		}
		m.flushQueue(w.s)
	}
	for _, s := range f.streams {
		if !s.closed && r.Err != nil && s.token != "" {
			// etcd refused the client's token the read (it expired, or
			// lost the range's permission), but answers a progress
			// request whatever the token: ask etcd for progress upstream
			// and answer at the revision it gives.
			m.progressFromUpstream(s)
			continue
		}
		if s.closed || r.Err != nil {
			// Unanswerable: like etcd when it cannot tell, say nothing.
			continue
		}
		// Answers go out in order and never go back in revision, whatever
		// order the fetches come back in.
		s.progressRev = max(s.progressRev, r.Header.GetRevision())
		s.progress = append(s.progress, s.progressRev)
		m.wantProgress(s)
		m.checkProgress(s)
	}
}

// flushQueue carries out the stream's requests whose turn has come: a
// create once its revision has been fetched, refusals and cancels at once.
func (m *Machine) flushQueue(s *stream) {
	for len(s.queue) > 0 {
		r := s.queue[0]
		switch {
		case r.refusal != "":
			m.sendRefusal(s, r.refusal)
		case r.create != nil:
			if r.create.result == nil || m.awaitUpstream(r.create, true) {
				return
			}
			s.creates--
			m.complete(r.create)
		case r.cancel:
			m.cancel(s, r.watchID)
		}
		s.queue[0] = request{}
		s.queue = s.queue[1:]
	}
	s.queue = nil // drained: its array goes (an idle stream keeps none)
	m.checkProgress(s)
}

// sendRefusal answers a create with etcd's refusal: created and cancelled
// at once, for no watch ID, with etcd's reason.
func (m *Machine) sendRefusal(s *stream, reason string) {
	m.send(s, &pb.WatchResponse{Header: m.header(), WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: reason})
}

// complete answers a create with the revision fetched for it: etcd's
// refusal, or created at that revision, and the watcher goes live in its
// range's group (or on a catch-up watch of its own).
func (m *Machine) complete(w *watcher) {
	s := w.s
	r := *w.result
	w.result = nil
	refuse := func(reason string) {
		// Nothing opened for it upstream (awaitUpstream) stays.
		m.closeCatchUp(w)
		m.unawait(w)
		m.stats.Watchers--
		m.sendRefusal(s, reason)
	}
	if r.Err != nil {
		refuse(r.Err.Error())
		return
	}
	w.id = w.chosen
	if w.id == 0 {
		w.id = s.autoID()
	} else if s.watchers[w.id] != nil {
		refuse(reasonDuplicateID)
		return
	}
	rev := r.Header.GetRevision()
	if fault("stale-created") && rev > 1 {
		rev--
		r.Header = m.headerAt(rev)
	}
	w.stopWaiting() // what it waited for has come
	w.state = live
	s.add(w)
	m.reply(w, &pb.WatchResponse{Header: r.Header, WatchId: w.id, Created: true})
	if len(s.queue) > 1 && s.queue[1].cancel && s.queue[1].watchID == w.id {
		// Cancelled right away: no need to serve it, nor to keep a group
		// opened for it (awaitUpstream).
		m.unawait(w)
		return
	}
	w.next = w.start
	if w.start == 0 {
		w.next = rev + 1
	}
	if w.catchUp != nil {
		return // opened before the create was answered (awaitUpstream)
	}
	if w.compacted {
		// etcd tells the watcher itself, with the compaction revision.
		m.openCatchUp(w)
		return
	}
	g := m.groups[w.rk]
	if g == nil {
		g = m.newGroup(w.rk, w.key, w.end, min(w.next, rev+1), w.progressNotify)
	}
	switch {
	case g.covers(w.next):
		m.join(w, g)
	case w.start != 0 && !m.checked():
		// The fetch at w.start found it not compacted: read the group's
		// range again from there, for this watcher and any that follow,
		// rather than open a watch per watcher. (Not on a lane with a
		// token: etcd would check the group's other watchers again.)
		m.rewind(g, w.next)
		m.join(w, g)
	default:
		m.openCatchUp(w)
	}
}

// Cancel handles a client's cancel request, in its turn.
func (m *Machine) Cancel(id port.StreamID, watchID int64) {
	s := m.streams[id]
	if s == nil {
		return
	}
	if len(s.queue) > 0 {
		s.queue = append(s.queue, request{cancel: true, watchID: watchID})
		return
	}
	m.cancel(s, watchID)
}

func (m *Machine) cancel(s *stream, watchID int64) {
	w := s.watchers[watchID]
	if w == nil {
		return // etcd answers nothing for an unknown watch
	}
	rev := max(m.lastRev, w.told)
	if fault("cancel-below-told") && w.next > 1 {
		rev = w.next - 1
	}
	m.reply(w, &pb.WatchResponse{Header: m.headerAt(rev), WatchId: watchID, Canceled: true})
	if fault("event-after-cancel") && w.group != nil {
		return
	}
	m.drop(w)
}
