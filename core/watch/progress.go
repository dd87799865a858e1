package watch

import (
	"math"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// upstreamProgress counts the progress requests on one upstream stream:
// when one was last sent, how many were sent on the current stream, and how
// many answered. etcd answers them in order and drops some (while a watch
// on the stream is unsynced), so the k-th answer is for the k-th request or
// a later one.
type upstreamProgress struct {
	sentAt time.Time
	sent   int64
	answer int64
}

// RequestProgress handles a client's progress request: it is answered once
// every watcher on the stream has caught up with the store revision as of
// now. etcd drops a request that comes while a watcher is behind; the
// proxy answers it, as soon as the answer is true. Like etcd, it says
// nothing to a stream without watchers (none created and not ended, no
// create waiting its turn).
func (m *Machine) RequestProgress(id port.StreamID) {
	s := m.streams[id]
	if s == nil || (!s.watching() && !fault("progress-without-watchers")) {
		return
	}
	f := port.Fetch{Token: s.token, Key: []byte{0}}
	if s.token != "" && len(s.order) > 0 {
		// Under auth the fetch is made with the client's token, which
		// may read only some keys; the range of one of its watches was
		// read with it when that watch was created. (etcd checks nothing
		// for a progress request; the fetch only learns the revision.)
		f.Key, f.End = s.order[0].key, s.order[0].end
	}
	ws := m.waitersOf(m.out.Fetch(port.Watch, f))
	ws.streams = append(ws.streams, s)
}

// wantProgress asks etcd for progress on the upstream streams that s
// depends on now, unless it was asked there very recently.
func (m *Machine) wantProgress(s *stream) {
	var need [port.NumWatchUpstreams]bool
	m.progressNeeds(s, &need)
	m.requestProgressOn(need)
}

// progressNeeds marks the upstream streams whose progress the watchers of
// s wait for. It is worked out afresh each time: watchers move between
// their group and a catch-up watch.
func (m *Machine) progressNeeds(s *stream, need *[port.NumWatchUpstreams]bool) {
	if len(s.progress) == 0 && len(s.upWaits) == 0 {
		return
	}
	for _, w := range s.order {
		switch {
		case w.catchUp != nil:
			need[port.WatchCatchUp] = true
		case w.group != nil:
			need[port.WatchShared] = true
		}
	}
}

func (m *Machine) requestProgressOn(need [port.NumWatchUpstreams]bool) {
	for u := range port.NumWatchUpstreams {
		p := &m.progress[u]
		if need[u] && (p.sentAt.IsZero() || !m.now.Before(p.sentAt.Add(m.cfg.RetryInterval))) {
			m.askProgress(u)
		}
	}
}

// askProgress sends a progress request on upstream stream u and returns
// its number on the stream. On the shared stream, groups whose upstream
// watch starts past etcd's revision are pulled back first: etcd would
// drop the request while they are there (see future.go).
func (m *Machine) askProgress(u port.UpstreamID) int64 {
	if u == port.WatchShared {
		m.pullBackFutures()
	}
	p := &m.progress[u]
	p.sentAt = m.now
	p.sent++
	m.upstream(u, &pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
	return p.sent
}

// retryProgress asks again on every upstream stream a client's progress
// request still waits for.
func (m *Machine) retryProgress() {
	var need [port.NumWatchUpstreams]bool
	for _, s := range m.sortedStreams() {
		m.progressNeeds(s, &need)
	}
	m.requestProgressOn(need)
}

// progressFromUpstream takes a client's progress request whose revision
// could not be read with the client's token: a progress request goes out
// now on each upstream stream the stream's watchers are on, and the first
// answer to one of them gives the revision (etcd answers it at its
// current revision, which is at least the store's when the client asked).
// A stream without watchers is told nothing, as etcd tells it nothing.
func (m *Machine) progressFromUpstream(s *stream) {
	var need [port.NumWatchUpstreams]bool
	for _, w := range s.order {
		switch {
		case w.state == ended:
		case w.catchUp != nil:
			need[port.WatchCatchUp] = true
		case w.group != nil:
			need[port.WatchShared] = true
		}
	}
	var wait [port.NumWatchUpstreams]int64
	any := false
	for u := range port.NumWatchUpstreams {
		wait[u] = math.MaxInt64
		if !need[u] {
			continue
		}
		wait[u], any = m.askProgress(u), true
	}
	if any {
		s.upWaits = append(s.upWaits, wait)
	}
}

// upstreamProgressFor gives the progress requests waiting for an answer on
// upstream stream u (progressFromUpstream) the revision rev of its answer.
func (m *Machine) upstreamProgressFor(u port.UpstreamID, rev int64) {
	k := m.progress[u].answer
	for _, s := range m.sortedStreams() {
		kept := s.upWaits[:0]
		for _, wait := range s.upWaits {
			if k < wait[u] {
				kept = append(kept, wait)
				continue
			}
			s.progressRev = max(s.progressRev, rev)
			s.progress = append(s.progress, s.progressRev)
		}
		s.upWaits = kept
	}
}

// progressAnswered handles etcd's answer to a progress request on stream u:
// etcd sends it only when every watch on the stream has been sent every
// event up to rev.
func (m *Machine) progressAnswered(u port.UpstreamID, rev int64) {
	m.progress[u].answer++
	k := m.progress[u].answer
	m.upstreamProgressFor(u, rev)
	// The answer speaks for a watch only if its request went out after
	// etcd confirmed the watch's creation: an earlier request may have
	// been answered before the watch existed. (etcd's created responses
	// and progress answers travel on different channels inside etcd, so
	// their order on the stream proves nothing.)
	covers := func(uw *upWatch) bool {
		if fault("progress-before-created") {
			return uw.confirmed
		}
		return uw.confirmed && k > uw.confirmSeq
	}
	switch u {
	case port.WatchShared:
		for _, g := range m.sortedGroups() {
			if covers(&g.up) {
				m.groupProgress(g, rev)
			}
		}
	case port.WatchCatchUp:
		for _, c := range m.sortedCatchUps() {
			if covers(&c.up) {
				c.rev = max(c.rev, rev)
				c.w.advance(c.rev)
			}
		}
		m.mergeAll()
	}
	m.checkAllProgress()
}

func (m *Machine) checkAllProgress() {
	// Most events find no progress request waiting: look before sorting
	// (the look only answers yes or no, so map order does not matter).
	waiting := false
	for _, s := range m.streams {
		if len(s.progress) > 0 {
			waiting = true
			break
		}
	}
	if !waiting {
		return
	}
	for _, s := range m.sortedStreams() {
		if len(s.progress) > 0 {
			m.checkProgress(s)
		}
	}
}

// checkProgress answers the stream's progress requests whose revision every
// watcher on the stream has reached.
func (m *Machine) checkProgress(s *stream) {
	if s.closed {
		return // closing: nothing more goes out on it
	}
	for len(s.progress) > 0 {
		if s.creating() {
			return
		}
		want := s.progress[0]
		for _, w := range s.order {
			if w.state == ended {
				continue // etcd sends it nothing more
			}
			if rev, ok := w.synced(); !ok || rev < want {
				return
			}
		}
		s.progress = s.progress[1:]
		m.send(s, &pb.WatchResponse{Header: m.headerAt(want), WatchId: invalidWatchID})
		for _, w := range s.order {
			w.told = max(w.told, want)
		}
	}
}

// relayProgress passes a progress notification etcd sent on an upstream
// watch at rev to the watchers it serves that asked for notifications, at
// a revision whose events each has been given. With the proxy's own
// cadence (Config.ProgressInterval) notifications come from notifyIdle
// instead.
func (m *Machine) relayProgress(ws []*watcher, rev int64) {
	if m.cfg.ProgressInterval > 0 {
		return
	}
	for _, w := range ws {
		if !w.progressNotify || m.future(w) {
			continue
		}
		if r, ok := w.synced(); ok && r >= rev && r >= w.told {
			m.reply(w, &pb.WatchResponse{Header: m.headerAt(r), WatchId: w.id})
			w.eventsSinceNotify = false
		}
	}
}

// notifyIdle sends a progress notification to every watcher that asked for
// them and was given no events since the last round: the proxy's own
// cadence.
func (m *Machine) notifyIdle() {
	for _, s := range m.sortedStreams() {
		for _, w := range s.order {
			if !w.progressNotify || w.state != live || m.future(w) {
				continue
			}
			if w.eventsSinceNotify {
				w.eventsSinceNotify = false
				continue
			}
			// Never a revision below one the watcher has been told: a
			// watcher still catching up gets nothing, as from etcd.
			if rev, ok := w.synced(); ok && rev >= w.told {
				m.reply(w, &pb.WatchResponse{Header: m.headerAt(rev), WatchId: w.id})
			}
		}
	}
}

// future reports whether a watcher's start revision is still ahead of the
// store: etcd counts such a watch as not synced and sends it no progress
// notification.
func (m *Machine) future(w *watcher) bool { return w.start > m.lastRev }
