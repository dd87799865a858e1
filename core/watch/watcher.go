package watch

import (
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

type watcherState int

const (
	fetching watcherState = iota // waiting for the revision at creation
	live                         // served by its group or its own upstream watch
)

// watcher is one client watch.
type watcher struct {
	s        *stream
	id       int64
	key, end []byte
	rk       rangeKey
	start    int64 // requested start revision, 0 for "now"
	state    watcherState
	// next is the first revision the watcher has not been given yet.
	next int64

	prevKV, progressNotify, fragment bool
	noPut, noDelete                  bool

	group *group // when served by a group
	own   *own   // when served by an upstream watch of its own

	result            *FetchResult // the fetched revision, until the create's turn
	cancelAfterCreate bool
	eventsSinceNotify bool
	sentRev           int64 // highest header revision the watcher has been sent
	lastNotify        time.Time
}

// own is an upstream watch serving a single watcher, on the Own stream.
type own struct {
	upID       int64
	w          *watcher
	rev        int64 // every event up to rev has reached the watcher
	created    bool  // etcd has answered the create
	confirmSeq int64 // upstream progress requests sent before that answer
	frag       fragments
}

// synced returns the revision up to which the watcher has been given every
// event, and whether that is known (false while it waits or is held back).
func (w *watcher) synced() (int64, bool) {
	if w.state != live || w.s.held {
		return 0, false
	}
	switch {
	case w.group != nil && w.group.rewindBase != 0 && w.next <= w.group.rewindBase:
		// Behind a rewind: it has what came before next, no more.
		return w.next - 1, true
	case w.group != nil:
		return max(w.group.rev, w.next-1), true
	case w.own != nil:
		return max(w.own.rev, w.next-1), true
	}
	return 0, false
}

// passes reports whether the watcher's filters let ev through.
func (w *watcher) passes(ev *mvccpb.Event) bool {
	return !(w.noPut && ev.Type == mvccpb.PUT) && !(w.noDelete && ev.Type == mvccpb.DELETE)
}

// fragment splits events into responses of at most limit bytes each (at
// least one event per response), marking all but the last as fragments, the
// way etcd does for watchers that asked for fragments.
func fragment(resp *pb.WatchResponse, limit int) []*pb.WatchResponse {
	if proto.Size(resp) <= limit || len(resp.Events) < 2 {
		return []*pb.WatchResponse{resp}
	}
	var out []*pb.WatchResponse
	evs := resp.Events
	for len(evs) > 0 {
		part := &pb.WatchResponse{Header: resp.Header, WatchId: resp.WatchId, Fragment: true}
		size := proto.Size(part)
		n := 0
		for n < len(evs) {
			es := proto.Size(evs[n]) + 8
			if n > 0 && size+es > limit {
				break
			}
			size += es
			n++
		}
		part.Events = evs[:n]
		evs = evs[n:]
		out = append(out, part)
	}
	out[len(out)-1].Fragment = false
	return out
}
