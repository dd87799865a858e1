package watch

import (
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// stream is one client watch stream.
type stream struct {
	id    StreamID
	token string
	// watchers by client watch ID, and their creation order for
	// deterministic iteration.
	watchers map[int64]*watcher
	order    []*watcher
	nextID   int64
	// queued is the bytes handed out for this stream and not yet reported
	// written; held is set while it is over the bound.
	queued int
	held   bool
	// progress holds the revisions of RequestProgress calls waiting until
	// every watcher has caught up with them.
	progress []int64
	// creates holds the create requests not answered yet, in the order
	// they came.
	creates []pendingCreate
}

// pendingCreate is a create request waiting for its answer: a refusal
// known at once, or a watcher waiting for its revision fetch.
type pendingCreate struct {
	w       *watcher
	refusal *pb.WatchResponse
}

func (s *stream) add(w *watcher) {
	s.watchers[w.id] = w
	s.order = append(s.order, w)
}

func (s *stream) remove(w *watcher) {
	delete(s.watchers, w.id)
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
