package sim

import (
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// Upstream models one etcd watch stream as the proxy sees it, down to the
// orderings etcd's server allows. etcd sends a stream's responses from two
// internal queues: a control queue (created, cancelled and refused creates)
// and the watch channel (events, progress notifications and answers,
// compaction). Its send loop picks between the two at random when both
// have something, so a created can overtake a progress answer made before
// it, and the reverse; but nothing for a watch ID leaves before that
// watch's created, and nothing after its cancel. The model keeps the two
// queues and lets the simulation choose, response by response, which one
// the next comes from (Take). Watches are created with the IDs the proxy
// chooses; events go out in order, possibly several revisions at once when
// a watch catches up, in fragments; progress answers only when every watch
// on the stream is synced; periodic progress notifications (ProgressTick)
// to synced watches that were sent no events since the last tick; and
// compaction responses for watches that need a compacted revision, after
// which etcd keeps the watch on the stream until the proxy cancels it.
type Upstream struct {
	// Permit, on a lane's stream, is etcd's check of the stream's token
	// for a watch's range at its creation: "" or the cancel reason. etcd
	// makes it when it takes the create up, which is some time after the
	// proxy sent it: here, when its answer is taken. sent is Clock's
	// reading when the proxy sent the create.
	Permit func(key, end []byte, sent int) string
	// Clock, when set, stamps the creates the proxy sends (see Permit).
	Clock *int
	// Token is the auth token the stream carries (a lane's).
	Token string
	// unchecked: the created answers whose token check is still to come,
	// with the create's range and stamp; refused: the watches etcd
	// refused, whose events never go out.
	unchecked map[*pb.WatchResponse]uncheckedCreate
	refused   map[int64]bool
	store     *Store
	watches   map[int64]*upWatch
	ctrl      []*pb.WatchResponse // etcd's control queue
	ch        []*pb.WatchResponse // etcd's watch channel
	// announced holds the watch IDs whose created has gone out; pending,
	// what the channel had for the others (etcd buffers it until then).
	announced map[int64]bool
	pending   map[int64][]*pb.WatchResponse
	// Creates counts create requests; asked records, for each progress
	// answer and each created, how many creates had been requested before
	// its request.
	Creates int
	asked   map[*pb.WatchResponse]int
	// Overtaken counts created responses taken while the channel still
	// held a progress answer requested before them: the reordering the
	// proxy must not mistake for progress of the new watch.
	Overtaken int
	// View, when set, is the member's own view of the store: a member that
	// fell behind, or lost its leader, serves the revision and compaction
	// it had then while the cluster moves on. Silent: it sends nothing.
	View *View
}

// View is a stale member's view of the store, or silence.
type View struct {
	Rev, Compacted int64
	Silent         bool
}

// rev is the store's revision as the member serving the stream sees it.
func (u *Upstream) rev() int64 {
	if u.View != nil && !u.View.Silent {
		return min(u.store.Rev, u.View.Rev)
	}
	return u.store.Rev
}

func (u *Upstream) compacted() int64 {
	if u.View != nil && !u.View.Silent {
		return min(u.store.Compacted, u.View.Compacted)
	}
	return u.store.Compacted
}

// silent reports that the member serving the stream answers nothing.
func (u *Upstream) silent() bool { return u.View != nil && u.View.Silent }

type upWatch struct {
	id       int64
	key, end []byte
	next     int64
	start    int64
	fragment bool
	sent     bool // events went out since the last progress tick
	// compacted: etcd sent the compaction response; the watch stays on
	// the stream (counted, its ID taken, and no progress answered while it
	// is there) until the proxy cancels it.
	compacted bool
}

// NewUpstream returns a stream over store.
func NewUpstream(store *Store) *Upstream {
	u := &Upstream{store: store}
	u.Reset()
	return u
}

func (u *Upstream) header() *pb.ResponseHeader { return &pb.ResponseHeader{Revision: u.rev()} }

// Request handles a request the proxy sent on the stream.
func (u *Upstream) Request(r *pb.WatchRequest) {
	switch v := r.RequestUnion.(type) {
	case *pb.WatchRequest_CreateRequest:
		c := v.CreateRequest
		u.Creates++
		if _, dup := u.watches[c.WatchId]; dup {
			u.ctrl = append(u.ctrl, &pb.WatchResponse{Header: u.header(), WatchId: -1, Created: true, Canceled: true, CancelReason: "mvcc: duplicate watch ID provided on the WatchStream"})
			return
		}
		w := &upWatch{id: c.WatchId, key: c.Key, end: c.RangeEnd, next: c.StartRevision, start: c.StartRevision, fragment: c.Fragment}
		if w.next == 0 {
			w.next = u.rev() + 1
		}
		u.watches[w.id] = w
		r := &pb.WatchResponse{Header: u.header(), WatchId: w.id, Created: true}
		u.asked[r] = u.Creates - 1
		u.ctrl = append(u.ctrl, r)
		if u.Permit != nil {
			sent := 0
			if u.Clock != nil {
				sent = *u.Clock
			}
			u.unchecked[r] = uncheckedCreate{key: c.Key, end: c.RangeEnd, sent: sent}
		}
	case *pb.WatchRequest_CancelRequest:
		id := v.CancelRequest.WatchId
		if _, ok := u.watches[id]; ok {
			delete(u.watches, id)
			u.ctrl = append(u.ctrl, &pb.WatchResponse{Header: u.header(), WatchId: id, Canceled: true})
		}
	case *pb.WatchRequest_ProgressRequest:
		for _, w := range u.watches {
			if !u.synced(w) {
				return // etcd ignores the request while a watch is unsynced
			}
		}
		if len(u.watches) > 0 {
			r := &pb.WatchResponse{Header: u.header(), WatchId: -1}
			u.asked[r] = u.Creates
			u.ch = append(u.ch, r)
		}
	}
}

// synced is etcd's test: the watch has been sent everything, and its start
// revision is not in the future. A compacted watch still on the stream is
// not synced.
func (u *Upstream) synced(w *upWatch) bool {
	return !w.compacted && w.next > u.rev() && w.start <= u.rev()
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
// watch asked for them. A watch that needs a revision below the compaction
// gets etcd's compaction response and is removed.
func (u *Upstream) Pump(maxRevs int, fragment bool) {
	if u.silent() {
		return
	}
	for _, id := range u.ids() {
		w := u.watches[id]
		if w.compacted {
			continue
		}
		if w.next <= u.rev() && w.next < u.compacted() {
			u.ch = append(u.ch, &pb.WatchResponse{Header: &pb.ResponseHeader{}, WatchId: w.id, CompactRevision: u.compacted(), Canceled: true})
			w.compacted = true
			continue
		}
		if w.next > u.rev() {
			continue
		}
		to := min(u.rev(), w.next+int64(maxRevs)-1)
		evs := u.store.Events(w.key, w.end, w.next, to)
		w.next = to + 1
		if len(evs) == 0 {
			continue
		}
		w.sent = true
		cp := make([]*mvccpb.Event, len(evs))
		for i, ev := range evs {
			cp[i] = proto.Clone(ev).(*mvccpb.Event)
		}
		h := &pb.ResponseHeader{Revision: u.rev()}
		if fragment && w.fragment && len(cp) > 1 {
			for i, ev := range cp {
				u.ch = append(u.ch, &pb.WatchResponse{Header: h, WatchId: w.id, Events: []*mvccpb.Event{ev}, Fragment: i < len(cp)-1})
			}
			continue
		}
		u.ch = append(u.ch, &pb.WatchResponse{Header: h, WatchId: w.id, Events: cp})
	}
}

// ProgressTick is etcd's progress ticker (--watch-progress-notify-interval):
// every synced watch that was sent no events since the last tick gets a
// progress notification. (The proxy creates every upstream watch with
// progress_notify.)
func (u *Upstream) ProgressTick() {
	if u.silent() {
		return
	}
	for _, id := range u.ids() {
		w := u.watches[id]
		if !w.sent && u.synced(w) && !w.compacted {
			u.ch = append(u.ch, &pb.WatchResponse{Header: u.header(), WatchId: w.id})
		}
		w.sent = false
	}
}

// Synced reports whether every watch has been sent everything (a compacted
// watch has nothing more coming).
func (u *Upstream) Synced() bool {
	for _, w := range u.watches {
		if !w.compacted && w.next <= u.rev() {
			return false
		}
	}
	return true
}

// Take removes up to n responses in the order the proxy receives them.
// fromCtrl chooses, whenever both of etcd's queues have something, whether
// the next comes from the control queue.
func (u *Upstream) Take(n int, fromCtrl func() bool) []*pb.WatchResponse {
	var out []*pb.WatchResponse
	if u.silent() {
		return nil
	}
	for len(out) < n && (len(u.ctrl) > 0 || len(u.ch) > 0) {
		if len(u.ctrl) > 0 && (len(u.ch) == 0 || fromCtrl()) {
			r := u.ctrl[0]
			u.ctrl = u.ctrl[1:]
			if chk, ok := u.unchecked[r]; ok {
				delete(u.unchecked, r)
				if reason := u.Permit(chk.key, chk.end, chk.sent); reason != "" {
					// etcd refuses the stream's token: an answer without
					// the ID, and the watch never was.
					delete(u.watches, r.WatchId)
					delete(u.pending, r.WatchId)
					u.refused[r.WatchId] = true
					out = append(out, &pb.WatchResponse{Header: u.header(), WatchId: -1, Created: true, Canceled: true, CancelReason: reason})
					continue
				}
			}
			out = append(out, r)
			switch {
			case r.Created && r.WatchId != -1:
				if u.overtakes(r) {
					u.Overtaken++
				}
				u.announced[r.WatchId] = true
				out = append(out, u.pending[r.WatchId]...)
				delete(u.pending, r.WatchId)
			case r.Canceled:
				delete(u.announced, r.WatchId)
				delete(u.pending, r.WatchId)
			}
			continue
		}
		r := u.ch[0]
		u.ch = u.ch[1:]
		if u.refused[r.WatchId] {
			continue
		}
		if r.WatchId != -1 && !u.announced[r.WatchId] {
			// etcd holds it until the created goes out; after a cancel,
			// for good.
			u.pending[r.WatchId] = append(u.pending[r.WatchId], r)
			continue
		}
		out = append(out, r)
	}
	return out
}

// overtakes reports whether the channel still holds a progress answer to a
// request made before created's create.
func (u *Upstream) overtakes(created *pb.WatchResponse) bool {
	for _, r := range u.ch {
		if r.WatchId == -1 && u.asked[r] <= u.asked[created] {
			return true
		}
	}
	return false
}

// Queued is the number of responses waiting for delivery.
func (u *Upstream) Queued() int { return len(u.ctrl) + len(u.ch) }

// Reset models the stream breaking (the proxy moving to another member):
// every watch and every undelivered response is gone.
func (u *Upstream) Reset() {
	u.watches = map[int64]*upWatch{}
	u.ctrl, u.ch = nil, nil
	u.announced = map[int64]bool{}
	u.pending = map[int64][]*pb.WatchResponse{}
	u.asked = map[*pb.WatchResponse]int{}
	u.unchecked = map[*pb.WatchResponse]uncheckedCreate{}
	u.refused = map[int64]bool{}
}

// uncheckedCreate is a create whose token etcd has still to check.
type uncheckedCreate struct {
	key, end []byte
	sent     int
}

// Kill ends a watch from etcd's side with a reason, as etcd does when it
// can no longer serve it (lost leader, revoked permission).
func (u *Upstream) Kill(id int64, reason string) {
	if _, ok := u.watches[id]; ok {
		delete(u.watches, id)
		u.ctrl = append(u.ctrl, &pb.WatchResponse{Header: u.header(), WatchId: id, Canceled: true, CancelReason: reason})
	}
}

// IDs lists the open watches' IDs in order.
func (u *Upstream) IDs() []int64 { return u.ids() }
