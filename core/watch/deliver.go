package watch

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/port"
)

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
	// Without filters a chunk is a run of the batch's own events, the same
	// SharedEvents for every watcher that gets it, so that the shell can
	// encode it once for all of them; with filters it is a slice of its own.
	filtering := w.filtering()
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
			var shared *port.SharedEvents
			if !filtering {
				shared = b.shared(w.prevKV, start, i)
				chunk = shared.Events
			}
			m.sendEvents(w, b.header, chunk, shared, size)
			chunk, size, start = nil, base, i
			if w.s.held() && i < len(evs) {
				return
			}
		}
	}
}

// sendEvents hands a watcher's events to its stream, in fragments if it
// asked for them and they are too large for one response.
func (m *Machine) sendEvents(w *watcher, h *pb.ResponseHeader, evs []*mvccpb.Event, shared *port.SharedEvents, size int) {
	if len(evs) == 0 {
		return
	}
	if h.GetRevision() < w.told {
		// Replayed history: the header must not go back on what the
		// watcher was told before.
		h = m.headerAt(w.told)
		size = proto.Size(&pb.WatchResponse{Header: h, WatchId: w.id, Events: evs})
	}
	w.eventsSinceNotify = true
	m.stats.EventsSent += int64(len(evs))
	if w.fragment && size > m.cfg.FragmentBytes {
		for _, part := range fragment(&pb.WatchResponse{Header: h, WatchId: w.id, Events: evs}, m.cfg.FragmentBytes) {
			m.reply(w, part)
		}
		return
	}
	w.told = max(w.told, h.GetRevision())
	unasked := fault("unasked-fragment") && !w.fragment && len(evs) > 1
	if shared != nil && !unasked {
		// No response object: the shell makes it from these.
		m.out.Send(port.Send{Stream: w.s.id, Shared: shared, WatchID: w.id, Header: h, Size: size})
		return
	}
	resp := &pb.WatchResponse{Header: h, WatchId: w.id, Events: evs, Fragment: unasked}
	m.out.Send(port.Send{Stream: w.s.id, Watch: resp, Shared: shared, Size: size})
}

// reply queues a response for one watcher and notes the revision it tells.
func (m *Machine) reply(w *watcher, r *pb.WatchResponse) {
	if r.CompactRevision == 0 {
		w.told = max(w.told, r.Header.GetRevision())
	}
	m.send(w.s, r)
}

// send queues a response for a client stream.
func (m *Machine) send(s *stream, r *pb.WatchResponse) {
	m.out.Send(port.Send{Stream: s.id, Watch: r, Size: proto.Size(r)})
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
