package watch

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// batch is the events of one upstream response: whole revisions. The
// events and their encoded sizes are computed once and shared by every
// watcher the batch reaches; so is the variant without prev_kv, and so are
// the runs of it handed to watchers unchanged.
type batch struct {
	header     *pb.ResponseHeader
	headerSize int
	events     []*mvccpb.Event
	sizes      []int
	last       int64 // revision of the last event

	bare      []*mvccpb.Event // events without prev_kv, made on first need
	bareSizes []int
	runs      []run // runs handed out unchanged, for reuse
}

// run is a part of a batch variant handed to watchers without filters.
type run struct {
	prevKV     bool
	start, end int
	shared     *port.SharedEvents
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

// shared returns events [start, end) of a variant as one SharedEvents, the
// same one for every watcher that gets exactly that run.
func (b *batch) shared(prevKV bool, start, end int) *port.SharedEvents {
	for _, r := range b.runs {
		if r.prevKV == prevKV && r.start == start && r.end == end {
			return r.shared
		}
	}
	evs, _ := b.variant(prevKV)
	r := run{prevKV: prevKV, start: start, end: end, shared: &port.SharedEvents{Events: evs[start:end:end]}}
	b.runs = append(b.runs, r)
	return r.shared
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
