package shell

// mergeBytes bounds the size of a response merged from several: the
// node's own chunks of events are at most about this size, and a client
// that set a small receive limit must not get responses larger than etcd
// would send it.
const mergeBytes = 64 << 10

// merger merges, among the responses a client stream's sender takes at
// once, each watcher's responses of plain events into one: a sender that
// fell behind by k revisions writes one message per watcher instead of k,
// and gRPC's cost is per message. etcd itself sends a watcher that is
// catching up several revisions in one response.
//
// Only responses that carry nothing but a run of shared events
// (port.SharedEvents: whole revisions, unfiltered) are merged. Every other
// response (created, cancel, progress, compaction, fragment, filtered
// events) is a barrier: nothing moves across it, so a progress
// notification still follows every event it speaks for. Between barriers a
// watcher's events keep their order; only the order between different
// watchers' responses changes, which etcd does not promise anyway.
type merger struct {
	out []outMsg
	// at: watch ID -> its open merged response in out, valid if made in
	// the current segment (seg counts barriers; no map clearing per
	// barrier, which would cost the map's size each time).
	at  map[int64]mergeSlot
	seg int
}

type mergeSlot struct{ seg, i int }

// merge returns the responses of batches, in order, with each watcher's
// mergeable runs merged. The result is valid until the next call; the
// sender clears it once sent, so that it holds no response while idle.
func (g *merger) merge(batches [][]outMsg) []outMsg {
	if len(batches) == 1 && len(batches[0]) == 1 {
		return batches[0]
	}
	if g.at == nil || len(g.at) > 4096 {
		g.at = map[int64]mergeSlot{} // a huge map is dropped, not kept and cleared again and again
	} else {
		clear(g.at)
	}
	if cap(g.out) > 4096 {
		g.out = nil // a burst's array is not kept for the stream's life
	}
	g.out = g.out[:0]
	for _, ms := range batches {
		for _, m := range ms {
			if !m.mergeable() {
				g.seg++
				g.out = append(g.out, m)
				continue
			}
			id := m.watchID()
			if s, ok := g.at[id]; ok && s.seg == g.seg && g.out[s.i].size+m.size <= mergeBytes {
				o := &g.out[s.i]
				o.more = append(o.more, m.shared)
				o.resp, o.header = m.resp, m.header // its header is the later one
				o.size += m.size
				continue
			}
			g.at[id] = mergeSlot{g.seg, len(g.out)}
			g.out = append(g.out, m)
		}
	}
	return g.out
}

// mergeable reports whether m is nothing but a run of shared events for
// one watcher.
func (m *outMsg) mergeable() bool {
	if m.shared == nil {
		return false
	}
	r := m.resp
	if r == nil {
		return m.id >= 0 // port.Send.Response: nothing but events
	}
	return r.WatchId >= 0 && !r.Created && !r.Canceled && !r.Fragment && r.CompactRevision == 0 && r.CancelReason == ""
}
