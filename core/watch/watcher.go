package watch

import (
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

type watcherState int

const (
	fetching watcherState = iota // waiting for the revision at creation
	live                         // served by its group or its catch-up watch
	ended                        // ended by etcd (compaction); its ID is taken until cancelled
)

// watcher is one client watch.
type watcher struct {
	s        *stream
	id       int64 // once created
	chosen   int64 // the ID the client asked for, 0 for the next free one
	key, end []byte
	rk       rangeKey
	start    int64 // requested start revision, 0 for "now"
	state    watcherState
	// next is the first revision the watcher has not been given yet.
	next int64

	prevKV, progressNotify, fragment bool
	noPut, noDelete                  bool

	group   *group   // when served by a group
	catchUp *catchUp // when served by a catch-up watch of its own

	fetch     port.FetchID      // the revision fetch for its creation
	result    *port.FetchResult // its answer, until the create's turn
	reread    bool              // the fetch at the start revision failed; this one reads the latest
	compacted bool              // etcd has compacted the start revision
	// awaits is the group whose upstream watch a create with a token
	// waits for etcd to accept before it is answered (see awaitUpstream).
	awaits *group

	// told is the highest revision the client has been given for this
	// watch (created, events, progress): nothing it is sent later may
	// carry a lower one.
	told              int64
	eventsSinceNotify bool
}

// passes reports whether the watcher's filters let ev through.
func (w *watcher) passes(ev *mvccpb.Event) bool {
	return !(w.noPut && ev.Type == mvccpb.PUT) && !(w.noDelete && ev.Type == mvccpb.DELETE)
}

// filtering reports whether the watcher drops some events.
func (w *watcher) filtering() bool { return w.noPut || w.noDelete }

// synced returns the revision up to which the watcher has been given every
// event, and whether that is known (false while it waits or is held back).
// A watcher's next revision moves past revisions without events for it as
// its group or catch-up watch learns of them (see advance), so next-1 is
// exactly what it has.
func (w *watcher) synced() (int64, bool) {
	if w.state != live || w.s.held() || (w.group == nil && w.catchUp == nil) {
		return 0, false
	}
	return w.next - 1, true
}

// advance records that the watcher has every event up to rev: its next
// revision moves past it unless its stream is held (then it has only what
// was delivered).
func (w *watcher) advance(rev int64) {
	if !w.s.held() {
		w.next = max(w.next, rev+1)
	}
}
