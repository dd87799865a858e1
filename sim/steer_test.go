package sim

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"pgregory.net/rapid"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// steered returns the schedule's steered actions. Each one builds, from
// plain steps a client and etcd could take (creates, writes, deliveries,
// compactions, a lost stream), one of the rare situations Coverage counts,
// with its parameters drawn, so that the default run reaches every one of
// them many times instead of by luck. They run among the random actions, on
// whatever state the schedule has built so far.
func steered(w *World) map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		// A watcher on a catch-up watch is cancelled while its stream is
		// held: its catch-up watch must go, and nothing may follow the
		// cancel.
		"steer: cancel a held catch-up": func(t *rapid.T) {
			c, m, ok := w.groupMember(t)
			if !ok {
				return
			}
			cw := w.lateCreate(t, c, m.Req)
			if info, ok := w.N.InspectWatcher(c.ID, cw.ID); !ok || !info.CatchUp {
				return
			}
			c.Reading = false
			for range 30 {
				w.rollWindows(1, 100)
				if info, ok := w.N.InspectWatcher(c.ID, cw.ID); !ok || info.Held {
					break
				}
			}
			w.Cancel(c.ID, cw)
			c.Reading = true
		},
		// The shared stream is lost while a group's upstream watch is
		// rewound: the rewind must start over, losing nothing.
		"steer: lose the shared stream during a rewind": func(t *rapid.T) {
			if _, _, ok := w.rewind(t); ok {
				w.Lose(port.WatchShared)
			}
		},
		// The shared stream is lost after a rewound group's upstream watch
		// has passed where the window began, while it still brings the
		// window's events to the watcher behind: the group must go on from
		// where its upstream watch stood.
		"steer: lose the shared stream after a rewind, before the head": func(t *rapid.T) {
			c, m, ok := w.groupMember(t)
			if !ok {
				return
			}
			for range w.Cfg.Watch.HistoryEvents + 2 {
				w.Write(Op{Key: string(m.Req.Key), Value: "w"}) // one batch each: the window moves
				w.Pump(port.WatchShared, 1, false)
				w.Deliver(port.WatchShared, 1<<30, ctrlFirst)
			}
			w.Read(c.ID)
			start := max(w.Store.Compacted+1, m.CreatedRev+1)
			late := w.Create(c.ID, &pb.WatchCreateRequest{Key: m.Req.Key, RangeEnd: m.Req.RangeEnd, StartRevision: start})
			w.answerFetches()
			w.Deliver(port.WatchShared, 1<<30, ctrlFirst)
			w.Read(c.ID)
			for range 40 {
				li, ok1 := w.N.InspectWatcher(c.ID, late.ID)
				mi, ok2 := w.N.InspectWatcher(c.ID, m.ID)
				if !ok1 || !ok2 || !li.InGroup || li.Held || mi.Held {
					return
				}
				if !li.GroupRewound && li.Next < mi.Next {
					w.Coverage.LostAfterRewind++
					w.Lose(port.WatchShared)
					return
				}
				w.Pump(port.WatchShared, 1, false)
				w.Deliver(port.WatchShared, 1<<30, ctrlFirst)
				w.Read(c.ID)
			}
		},
		// etcd compacts a rewound group's upstream watch at exactly the
		// revision another of its watchers needs next: that watcher must
		// go on, the rewinding one must get the compaction.
		"steer: compact a rewound group at a watcher's next revision": func(t *rapid.T) {
			c, m, ok := w.rewind(t)
			if !ok {
				return
			}
			w.Write(writeAll(10)...) // the group does not see it: its upstream watch is behind
			info, ok := w.N.InspectWatcher(c.ID, m.ID)
			if !ok || !info.InGroup || info.Next <= w.Store.Compacted || info.Next > w.Store.Rev {
				return
			}
			w.Compact(info.Next)
			w.Pump(port.WatchShared, 1<<30, false)
			w.Deliver(port.WatchShared, 1<<30, ctrlFirst)
		},
		// A watch etcd ended by compaction is cancelled by the client: etcd
		// confirms it, and the ID is free again only then.
		"steer: cancel a compacted watch": func(t *rapid.T) {
			c := w.readingClient(t)
			for w.Store.Rev < 3 {
				w.Write(writeAll(1)...)
			}
			if w.Store.Compacted < w.Store.Rev {
				w.Compact(w.Store.Rev)
			}
			key, end := drawRange(t)
			cw := w.Create(c.ID, &pb.WatchCreateRequest{Key: key, RangeEnd: end, StartRevision: w.Store.Compacted - 1, PrevKv: rapid.Bool().Draw(t, "prev_kv")})
			w.answerFetches()
			w.Pump(port.WatchCatchUp, 1<<30, false)
			w.Deliver(port.WatchCatchUp, 1<<30, ctrlFirst)
			w.Read(c.ID)
			if cw.Ended {
				w.Cancel(c.ID, cw)
				w.Read(c.ID)
			}
		},
		// A progress request goes upstream, then a create starting in the
		// past: etcd may send the create's created before the older
		// progress answer, which must not count as progress of the new
		// watch (it has history to bring first).
		"steer: created overtakes a progress answer": func(t *rapid.T) {
			c, _, ok := w.groupMember(t)
			if !ok {
				return
			}
			w.rollWindows(3, 10)
			w.RequestProgress(c.ID)
			w.answerFetches()
			key, end := drawRange(t)
			start := max(w.Store.Compacted+1, w.Store.Rev-rapid.Int64Range(0, 3).Draw(t, "back by"))
			w.Create(c.ID, &pb.WatchCreateRequest{Key: key, RangeEnd: end, StartRevision: start})
			w.answerFetches()
			w.Deliver(port.WatchShared, 1<<30, ctrlFirst)
			w.Read(c.ID)
		},
		// On a cluster where nothing is written, a progress request is
		// answered as soon as the proxy's upstream watches have caught up:
		// none of them may start where etcd counts it as not synced.
		"steer: progress on an idle cluster": func(t *rapid.T) {
			c, _, ok := w.groupMember(t)
			if !ok {
				return
			}
			w.RequestProgress(c.ID)
			// (A stream that was stalled may have much to catch up on first.)
			for range 200 {
				w.answerFetches()
				for _, u := range w.UpIDs() {
					w.Pump(u, 1<<30, false)
					w.Deliver(u, 1<<30, ctrlFirst)
				}
				w.Read(c.ID)
				if len(c.progress) == 0 || w.progressMayStay(c) || c.Closed {
					return
				}
				w.Tick(w.Cfg.Port.RetryInterval)
			}
			w.violate("stream %d: a progress request on an idle cluster is still unanswered after 200 rounds", c.ID)
		},
	}
}

// readingClient returns an open client stream that reads, opening one if
// there is none.
func (w *World) readingClient(t *rapid.T) *Client {
	var open []port.StreamID
	for _, id := range w.clientIDs() {
		if !w.Clients[id].Closed {
			open = append(open, id)
		}
	}
	var c *Client
	if len(open) == 0 {
		c = w.Clients[w.Open()]
	} else {
		c = w.Clients[rapid.SampledFrom(open).Draw(t, "steered stream")]
	}
	c.Reading = true
	return c
}

// groupMember creates a watch on a drawn range and has it created and in
// its group: the client has read the created. When the watch was not
// created it reports false, and the steered action ends there. (It must not
// skip: rapid leaves a skipped action out of the schedule it records, so
// the steps it took would be missing when the schedule is shrunk or
// replayed from its fail file.)
func (w *World) groupMember(t *rapid.T) (*Client, *ClientWatch, bool) {
	c := w.readingClient(t)
	key, end := drawRange(t)
	cw := w.Create(c.ID, &pb.WatchCreateRequest{Key: key, RangeEnd: end, ProgressNotify: rapid.Bool().Draw(t, "progress_notify")})
	w.answerFetches()
	w.Deliver(port.WatchShared, 1<<30, ctrlFirst)
	w.Read(c.ID)
	if !cw.Created {
		return c, cw, false
	}
	return c, cw, true
}

// lateCreate creates a second watch like req on c whose revision fetch is
// served now and answered only after the group's window has moved past it:
// the proxy must serve it from a catch-up watch.
func (w *World) lateCreate(t *rapid.T, c *Client, like *pb.WatchCreateRequest) *ClientWatch {
	w.answerFetches()
	cw := w.Create(c.ID, &pb.WatchCreateRequest{Key: like.Key, RangeEnd: like.RangeEnd, PrevKv: rapid.Bool().Draw(t, "prev_kv")})
	if len(w.fetches) == 0 {
		return cw
	}
	w.ServeFetch(len(w.fetches) - 1)
	w.rollWindows(w.Cfg.Watch.HistoryEvents+1, 20)
	w.DeliverFetch(len(w.served) - 1)
	w.Read(c.ID)
	return cw
}

// rewind makes a group's upstream watch rewind: a member's range gets a
// second watch starting before the group's window. It returns the member.
func (w *World) rewind(t *rapid.T) (*Client, *ClientWatch, bool) {
	c, m, ok := w.groupMember(t)
	if !ok {
		return c, m, false
	}
	w.rollWindows(w.Cfg.Watch.HistoryEvents+1, 10)
	w.Read(c.ID)
	start := w.Store.Compacted + 1
	if start >= m.CreatedRev {
		return c, m, false
	}
	w.Create(c.ID, &pb.WatchCreateRequest{Key: m.Req.Key, RangeEnd: m.Req.RangeEnd, StartRevision: start})
	w.answerFetches()
	return c, m, w.N.Gauges().Watch.Rewinding > 0
}

// rollWindows writes every key n times with values of size bytes and has
// the groups receive it all.
func (w *World) rollWindows(n, size int) {
	for range n {
		w.Write(writeAll(size)...)
	}
	w.Pump(port.WatchShared, 1<<30, false)
	w.Deliver(port.WatchShared, 1<<30, ctrlFirst)
}

// answerFetches answers every revision fetch, served or not, until none is
// left.
func (w *World) answerFetches() {
	for w.Pending() > 0 {
		for len(w.served) > 0 {
			w.DeliverFetch(0)
		}
		for len(w.fetches) > 0 {
			w.AnswerFetch(0, false)
		}
	}
}
