package watch

import (
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// rangeKey identifies a key range exactly as clients asked for it.
type rangeKey struct{ key, end string }

// batch is the events of one upstream response: whole revisions. The
// events and their encoded sizes are computed once and shared by every
// watcher the batch reaches; so is the variant without prev_kv.
type batch struct {
	header     *pb.ResponseHeader
	headerSize int
	events     []*mvccpb.Event
	sizes      []int
	last       int64 // revision of the last event

	bare      []*mvccpb.Event // events without prev_kv, made on first need
	bareSizes []int
}

func newBatch(h *pb.ResponseHeader, evs []*mvccpb.Event) *batch {
	b := &batch{header: h, headerSize: proto.Size(h), events: evs, sizes: make([]int, len(evs)), last: evs[len(evs)-1].Kv.ModRevision}
	for i, ev := range evs {
		b.sizes[i] = proto.Size(ev)
	}
	return b
}

// variant returns the events with or without prev_kv, and their sizes.
func (b *batch) variant(prevKV bool) ([]*mvccpb.Event, []int) {
	if prevKV {
		return b.events, b.sizes
	}
	if b.bare == nil {
		b.bare = make([]*mvccpb.Event, len(b.events))
		b.bareSizes = make([]int, len(b.events))
		for i, ev := range b.events {
			if ev.PrevKv != nil {
				ev = &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
				b.bareSizes[i] = proto.Size(ev)
			} else {
				b.bareSizes[i] = b.sizes[i]
			}
			b.bare[i] = ev
		}
	}
	return b.bare, b.bareSizes
}

// slice returns a batch of the events of b in revisions keep accepts.
func (b *batch) slice(keep func(rev int64) bool) *batch {
	var evs []*mvccpb.Event
	for _, ev := range b.events {
		if keep(ev.Kv.ModRevision) {
			evs = append(evs, ev)
		}
	}
	if len(evs) == 0 {
		return nil
	}
	return newBatch(b.header, evs)
}

// group is the client watchers on one key range, fed by one upstream watch
// on the shared upstream stream.
type group struct {
	rk         rangeKey
	key, end   []byte
	upID       int64 // upstream watch ID
	upCreated  bool  // etcd has answered the upstream watch's create
	confirmSeq int64 // upstream progress requests sent before that answer
	// rev is the group's progress: every event of the range up to rev has
	// reached the group. base is where the window starts: the window holds
	// every event in (base, rev].
	rev, base int64
	window    []*batch
	windowLen int // events in window
	watchers  []*watcher
	frag      fragments
	// While the upstream watch is rewound (see Machine.rewind), rewindBase
	// is where the window began before, and prefix collects the older
	// events until the upstream watch has passed rewindBase.
	rewindBase int64
	prefix     []*batch
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

// record appends a batch to the window and evicts the oldest batches beyond
// limit events, always keeping the newest.
func (g *group) record(b *batch, limit int) {
	if b.last <= g.rev {
		return // a rewound upstream watch bringing again what the window has
	}
	if first := b.events[0].Kv.ModRevision; first <= g.rev {
		rev := g.rev
		b = b.slice(func(r int64) bool { return r > rev })
	}
	g.window = append(g.window, b)
	g.windowLen += len(b.events)
	g.evict(limit)
	if b.last > g.rev {
		g.rev = b.last
	}
}

// evict drops the oldest batches beyond limit events, keeping the newest.
func (g *group) evict(limit int) {
	for len(g.window) > 1 && g.windowLen > limit {
		g.base = g.window[0].last
		g.windowLen -= len(g.window[0].events)
		g.window[0] = nil
		g.window = g.window[1:]
	}
}

// covers reports whether a watcher needing events from next on can be
// served from the window and the live stream.
func (g *group) covers(next int64) bool { return next > g.base }

func (g *group) remove(w *watcher) {
	if i := slices.Index(g.watchers, w); i >= 0 {
		g.watchers = slices.Delete(g.watchers, i, i+1)
	}
}

// recordRewound records a batch from a rewound upstream watch: events up to
// where the window began go to the prefix, events the window already holds
// are skipped, newer events are recorded as usual. Once the upstream watch
// has passed where the window began, the prefix goes in front of it.
func (g *group) recordRewound(b *batch, limit int) {
	rewindBase, rev := g.rewindBase, g.rev
	if old := b.slice(func(r int64) bool { return r <= rewindBase }); old != nil {
		g.prefix = append(g.prefix, old)
	}
	if b.last > g.rewindBase {
		g.endRewind()
	}
	if fresh := b.slice(func(r int64) bool { return r > rev }); fresh != nil {
		g.record(fresh, limit)
	} else {
		g.evict(limit)
	}
}

// endRewind puts the events collected by a rewind in front of the window.
func (g *group) endRewind() {
	n := 0
	for _, p := range g.prefix {
		n += len(p.events)
	}
	g.window = append(g.prefix, g.window...)
	g.windowLen += n
	g.prefix = nil
	g.rewindBase = 0
}

// progress records that the upstream watch has delivered every event up to
// rev.
func (g *group) progress(rev int64, limit int) {
	if g.rewindBase != 0 && rev >= g.rewindBase {
		g.endRewind()
		g.evict(limit)
	}
	if rev > g.rev {
		g.rev = rev
	}
}
