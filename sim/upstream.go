package sim

import (
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// Upstream models one etcd watch stream as the proxy sees it: watches
// created with the IDs the proxy chooses, events sent in order and
// possibly several revisions at once when a watch catches up, progress
// notifications only when every watch on the stream is synced, and
// compaction responses for watches that fall behind a compaction. Responses
// wait in a queue until the simulation delivers them, which models delay.
type Upstream struct {
	store   *Store
	watches map[int64]*upWatch
	queue   []*pb.WatchResponse
	// Creates counts create requests; Open tracks watches per range.
	Creates int
}

type upWatch struct {
	id       int64
	key, end []byte
	next     int64
	fragment bool
}

// NewUpstream returns a stream over store.
func NewUpstream(store *Store) *Upstream {
	return &Upstream{store: store, watches: map[int64]*upWatch{}}
}

func (u *Upstream) header() *pb.ResponseHeader { return &pb.ResponseHeader{Revision: u.store.Rev} }

// Request handles a request the proxy sent on the stream.
func (u *Upstream) Request(r *pb.WatchRequest) {
	switch v := r.RequestUnion.(type) {
	case *pb.WatchRequest_CreateRequest:
		c := v.CreateRequest
		u.Creates++
		if _, dup := u.watches[c.WatchId]; dup {
			u.queue = append(u.queue, &pb.WatchResponse{Header: u.header(), WatchId: -1, Created: true, Canceled: true, CancelReason: "mvcc: duplicate watch ID provided on the WatchStream"})
			return
		}
		w := &upWatch{id: c.WatchId, key: c.Key, end: c.RangeEnd, next: c.StartRevision, fragment: c.Fragment}
		if w.next == 0 {
			w.next = u.store.Rev + 1
		}
		u.watches[w.id] = w
		u.queue = append(u.queue, &pb.WatchResponse{Header: u.header(), WatchId: w.id, Created: true})
	case *pb.WatchRequest_CancelRequest:
		id := v.CancelRequest.WatchId
		if _, ok := u.watches[id]; ok {
			delete(u.watches, id)
			u.queue = append(u.queue, &pb.WatchResponse{Header: u.header(), WatchId: id, Canceled: true})
		}
	case *pb.WatchRequest_ProgressRequest:
		for _, w := range u.watches {
			if w.next <= u.store.Rev {
				return // etcd ignores the request while a watch is unsynced
			}
		}
		if len(u.watches) > 0 {
			u.queue = append(u.queue, &pb.WatchResponse{Header: u.header(), WatchId: -1})
		}
	}
}

// Open returns the number of watches open on the stream and the largest
// number on one key range.
func (u *Upstream) Open() (total, perRange int) {
	ranges := map[string]int{}
	for _, w := range u.watches {
		k := string(w.key) + "\x00" + string(w.end)
		ranges[k]++
		perRange = max(perRange, ranges[k])
	}
	return len(u.watches), perRange
}

func (u *Upstream) ids() []int64 {
	ids := make([]int64, 0, len(u.watches))
	for id := range u.watches {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// Pump lets etcd send what it has for each watch: up to maxRevs revisions
// at once (catching up), split into fragments when fragment is set and the
// watch asked for them. A watch behind the compaction gets etcd's
// compaction response and is removed.
func (u *Upstream) Pump(maxRevs int, fragment bool) {
	for _, id := range u.ids() {
		w := u.watches[id]
		if w.next <= u.store.Rev && w.next < u.store.Compacted {
			u.queue = append(u.queue, &pb.WatchResponse{Header: &pb.ResponseHeader{}, WatchId: w.id, CompactRevision: u.store.Compacted, Canceled: true})
			delete(u.watches, id)
			continue
		}
		if w.next > u.store.Rev {
			continue
		}
		to := min(u.store.Rev, w.next+int64(maxRevs)-1)
		evs := u.store.Events(w.key, w.end, w.next, to)
		w.next = to + 1
		if len(evs) == 0 {
			continue
		}
		cp := make([]*mvccpb.Event, len(evs))
		for i, ev := range evs {
			cp[i] = proto.Clone(ev).(*mvccpb.Event)
		}
		h := &pb.ResponseHeader{Revision: u.store.Rev}
		if fragment && w.fragment && len(cp) > 1 {
			for i, ev := range cp {
				u.queue = append(u.queue, &pb.WatchResponse{Header: h, WatchId: w.id, Events: []*mvccpb.Event{ev}, Fragment: i < len(cp)-1})
			}
			continue
		}
		u.queue = append(u.queue, &pb.WatchResponse{Header: h, WatchId: w.id, Events: cp})
	}
}

// Synced reports whether every watch has been sent everything.
func (u *Upstream) Synced() bool {
	for _, w := range u.watches {
		if w.next <= u.store.Rev {
			return false
		}
	}
	return true
}

// Take removes up to n queued responses, oldest first.
func (u *Upstream) Take(n int) []*pb.WatchResponse {
	n = min(n, len(u.queue))
	out := u.queue[:n:n]
	u.queue = u.queue[n:]
	return out
}

// Queued is the number of responses waiting for delivery.
func (u *Upstream) Queued() int { return len(u.queue) }

// Reset models the stream breaking (the proxy moving to another member):
// every watch and every undelivered response is gone.
func (u *Upstream) Reset() {
	u.watches = map[int64]*upWatch{}
	u.queue = nil
}

// Kill ends a watch from etcd's side with a reason, as etcd does when it
// can no longer serve it (lost leader, revoked permission).
func (u *Upstream) Kill(id int64, reason string) {
	if _, ok := u.watches[id]; ok {
		delete(u.watches, id)
		u.queue = append(u.queue, &pb.WatchResponse{Header: u.header(), WatchId: id, Canceled: true, CancelReason: reason})
	}
}

// IDs lists the open watches' IDs in order.
func (u *Upstream) IDs() []int64 { return u.ids() }
