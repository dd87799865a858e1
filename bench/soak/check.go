package main

// The check: etcd's history of the watched prefixes, read from the members
// directly, against every watch session.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// history is etcd's events on each watched prefix, in revision order,
// encoded as the sessions' events are (rev<<32 | seq).
type history struct {
	events [][]uint64 // by prefix
	total  int
	other  int // events under historyPrefix outside the watched prefixes
	last   int64
}

// readHistory puts the end marker on etcd and reads every event under
// historyPrefix from revision from up to it, with a watch on the members
// directly (nothing is compacted during the run).
func readHistory(ctx context.Context, direct *clientv3.Client, from int64, prefixes int) (*history, error) {
	end, err := direct.Put(ctx, endMarker, "")
	if err != nil {
		return nil, fmt.Errorf("putting the end marker: %w", err)
	}
	h := &history{events: make([][]uint64, prefixes), last: end.Header.Revision}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range direct.Watch(wctx, historyPrefix, clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			return nil, fmt.Errorf("reading etcd's history: %w", err)
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			if key == endMarker {
				return h, nil
			}
			p := prefixOf(key, prefixes)
			if p < 0 {
				h.other++
				continue
			}
			h.events[p] = append(h.events[p], uint64(ev.Kv.ModRevision)<<32|uint64(seqOf(key, prefixKey(p))))
			h.total++
		}
	}
	return nil, fmt.Errorf("reading etcd's history: the watch ended before the end marker: %v", ctx.Err())
}

// prefixOf is the index of the watched prefix key is under, or -1.
func prefixOf(key string, prefixes int) int {
	rest, ok := strings.CutPrefix(key, historyPrefix)
	if !ok || len(rest) < 3 || rest[2] != '/' {
		return -1
	}
	i, err := strconv.Atoi(rest[:2])
	if err != nil || i < 0 || i >= prefixes {
		return -1
	}
	return i
}

// verdict is the check of every session.
type verdict struct {
	sessions, catchup, rewatched, empty int
	progressed                          int // sessions whose window a progress notification extended past their last event
	expected, received                  int64
	lost, duplicated, outOfOrder        int64
	foreign, late                       int64
	// behind counts the events etcd had acknowledged on a session's
	// prefix when it ended but that it had not received by then (past
	// its last revision): delivery lag, not loss. Only sessions that
	// started at the newest revision count (one from an older revision
	// may end before it has caught up).
	behind, behindMax int64
	behindSessions    int
	bad               []badSession // the first few sessions that failed
	badCount          int
}

type badSession struct {
	watcher         int
	s               *session
	last            int64
	lost, dup, ooo  int
	foreign         int
	lostRevs        []int64 // the first few
	dupRevs, frRevs []int64
}

func (v *verdict) ok() bool {
	return v.lost == 0 && v.duplicated == 0 && v.outOfOrder == 0 && v.foreign == 0 && v.late == 0
}

// check compares every session with etcd's history of its prefix, from its
// start revision up to the last revision it knows it has (lastRev).
func check(h *history, sessions [][]*session) verdict {
	var v verdict
	for w, ss := range sessions {
		for _, s := range ss {
			v.sessions++
			if s.catchup {
				v.catchup++
			}
			if s.rewatch > 0 {
				v.rewatched++
			}
			last := s.lastRev()
			if n := len(s.events); last > 0 && (n == 0 || int64(s.events[n-1]>>32) < last) {
				v.progressed++
			}
			hist := h.events[s.prefix]
			lo := sort.Search(len(hist), func(i int) bool { return int64(hist[i]>>32) >= s.start })
			hi := sort.Search(len(hist), func(i int) bool { return int64(hist[i]>>32) > last })
			want := hist[lo:max(lo, hi)]
			if !s.catchup && s.knownAtEnd > last {
				k := sort.Search(len(hist), func(i int) bool { return int64(hist[i]>>32) > s.knownAtEnd })
				if n := int64(k - max(lo, hi)); n > 0 {
					v.behind += n
					v.behindMax = max(v.behindMax, n)
					v.behindSessions++
				}
			}
			if len(want) == 0 && len(s.events) == 0 {
				v.empty++
			}
			v.expected += int64(len(want))
			v.received += int64(len(s.events))
			v.late += int64(s.late)
			if slices.Equal(s.events, want) && s.late == 0 {
				continue
			}
			b := compare(s, want)
			b.watcher, b.last = w, last
			v.lost += int64(b.lost)
			v.duplicated += int64(b.dup)
			v.outOfOrder += int64(b.ooo)
			v.foreign += int64(b.foreign)
			v.badCount++
			if len(v.bad) < 10 {
				v.bad = append(v.bad, b)
			}
		}
	}
	return v
}

// compare counts how a session's events differ from the ones it should
// have received.
func compare(s *session, want []uint64) badSession {
	b := badSession{s: s}
	wanted := make(map[uint64]bool, len(want))
	for _, e := range want {
		wanted[e] = true
	}
	seen := make(map[uint64]bool, len(s.events))
	note := func(list *[]int64, e uint64) {
		if len(*list) < 5 {
			*list = append(*list, int64(e>>32))
		}
	}
	for i, e := range s.events {
		switch {
		case seen[e]:
			b.dup++
			note(&b.dupRevs, e)
			continue
		case !wanted[e]:
			b.foreign++
			note(&b.frRevs, e)
		}
		seen[e] = true
		if i > 0 && e>>32 < s.events[i-1]>>32 {
			b.ooo++
		}
	}
	for _, e := range want {
		if !seen[e] {
			b.lost++
			note(&b.lostRevs, e)
		}
	}
	return b
}
