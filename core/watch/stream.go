package watch

import (
	"slices"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// stream is one client watch stream.
type stream struct {
	id     port.StreamID
	token  string
	flow   *port.Flow
	closed bool
	// watchers by client watch ID: created watches, and watches etcd ended
	// (compaction) that the client has not cancelled yet, whose IDs stay
	// taken as in etcd. order is their creation order, for deterministic
	// iteration.
	watchers map[int64]*watcher
	order    []*watcher
	nextID   int64
	// queue holds the requests not carried out yet, in the order they
	// came: etcd handles a stream's requests one after another, so a create
	// waiting for its revision fetch holds back the cancels behind it, and
	// a watch ID is taken or freed exactly when etcd would.
	queue []request
	// creates counts the creates in queue.
	creates int
	// progress holds the revisions of RequestProgress calls waiting until
	// every watcher has caught up with them.
	progress    []int64
	progressRev int64 // the revision of the latest of them
	// upWaits are progress requests whose revision comes from an upstream
	// progress answer (see progressFromUpstream): per upstream stream, the
	// number of answers there that makes one sent after the request.
	upWaits [][port.NumWatchUpstreams]int64
}

// request is a client request waiting its turn.
type request struct {
	create  *watcher // a create, waiting for its revision fetch
	refusal string   // a create refused at once, with etcd's reason
	cancel  bool     // a cancel of watchID
	watchID int64
}

func (s *stream) held() bool { return s.flow.Held() }

// creating reports whether a create is still waiting for its turn.
func (s *stream) creating() bool {
	for _, r := range s.queue {
		if r.create != nil {
			return true
		}
	}
	return false
}

// watching reports whether the stream has a watcher as etcd would see it
// at a request coming now: a create waiting its turn, or a watcher that
// etcd has not ended.
func (s *stream) watching() bool {
	if s.creates > 0 {
		return true
	}
	for _, w := range s.order {
		if w.state != ended {
			return true
		}
	}
	return false
}

// cancelling reports whether a cancel of watchID is queued.
func (s *stream) cancelling(watchID int64) bool {
	for _, r := range s.queue {
		if r.cancel && r.watchID == watchID {
			return true
		}
	}
	return false
}

func (s *stream) add(w *watcher) {
	s.watchers[w.id] = w
	s.order = append(s.order, w)
}

func (s *stream) remove(w *watcher) {
	if s.watchers[w.id] == w {
		delete(s.watchers, w.id)
	}
	if i := slices.Index(s.order, w); i >= 0 {
		s.order = slices.Delete(s.order, i, i+1)
	}
}

// autoID picks the ID etcd would: the lowest unused ID from a counter that
// only moves forward.
func (s *stream) autoID() int64 {
	for s.watchers[s.nextID] != nil {
		s.nextID++
	}
	id := s.nextID
	s.nextID++
	return id
}
