package main

import "testing"

func ev(rev int64, seq uint32) uint64 { return uint64(rev)<<32 | uint64(seq) }

// The check counts each way a session can differ from etcd's history, and
// only within the session's window.
func TestCheck(t *testing.T) {
	h := &history{events: [][]uint64{
		{ev(10, 0), ev(12, 2), ev(14, 4), ev(16, 6), ev(18, 8)},
		{ev(11, 1), ev(13, 3), ev(15, 5)},
	}}
	for _, tc := range []struct {
		name                         string
		s                            session
		lost, dup, ooo, foreign, bad int64
		expected                     int64
	}{
		{name: "exact", s: session{prefix: 0, start: 12, events: []uint64{ev(12, 2), ev(14, 4)}}, expected: 2},
		{name: "window ends at the last event", s: session{prefix: 0, start: 11, events: []uint64{ev(12, 2)}}, expected: 1},
		{name: "progress extends the window", s: session{prefix: 0, start: 11, events: []uint64{ev(12, 2)}, progress: 16},
			expected: 3, lost: 2, bad: 1},
		{name: "nothing received", s: session{prefix: 1, start: 11}},
		{name: "gap", s: session{prefix: 0, start: 10, events: []uint64{ev(10, 0), ev(14, 4)}}, expected: 3, lost: 1, bad: 1},
		{name: "head lost", s: session{prefix: 1, start: 11, events: []uint64{ev(13, 3)}}, expected: 2, lost: 1, bad: 1},
		{name: "duplicate", s: session{prefix: 1, start: 11, events: []uint64{ev(11, 1), ev(11, 1), ev(13, 3)}}, expected: 2, dup: 1, bad: 1},
		{name: "out of order", s: session{prefix: 1, start: 11, events: []uint64{ev(13, 3), ev(11, 1), ev(15, 5)}}, expected: 3, ooo: 1, bad: 1},
		{name: "other prefix's event", s: session{prefix: 1, start: 11, events: []uint64{ev(11, 1), ev(12, 2), ev(13, 3)}}, expected: 2, foreign: 1, bad: 1},
		{name: "wrong key", s: session{prefix: 1, start: 11, events: []uint64{ev(11, foreign)}}, expected: 1, lost: 1, foreign: 1, bad: 1},
		{name: "before the start", s: session{prefix: 1, start: 13, events: []uint64{ev(11, 1), ev(13, 3)}}, expected: 1, foreign: 1, bad: 1},
	} {
		s := tc.s
		v := check(h, [][]*session{{&s}})
		got := []int64{v.expected, v.lost, v.duplicated, v.outOfOrder, v.foreign, int64(v.badCount)}
		want := []int64{tc.expected, tc.lost, tc.dup, tc.ooo, tc.foreign, tc.bad}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: expected, lost, duplicated, out of order, foreign, bad = %v; want %v", tc.name, got, want)
				break
			}
		}
		if v.ok() != (tc.bad == 0) {
			t.Errorf("%s: ok() = %v", tc.name, v.ok())
		}
	}
}

func TestSeqAndPrefix(t *testing.T) {
	if got := seqOf(keyOf(10, 123), prefixKey(3)); got != 123 {
		t.Errorf("seqOf(keyOf(10, 123)) = %d", got)
	}
	if got := seqOf(keyOf(10, 124), prefixKey(3)); got != foreign {
		t.Errorf("a key of prefix 4 parsed under prefix 3 as %d", got)
	}
	if got := prefixOf(keyOf(10, 127), 10); got != 7 {
		t.Errorf("prefixOf = %d; want 7", got)
	}
	for _, k := range []string{endMarker, "soak/lease/000001", "soak/p99/000000001"} {
		if got := prefixOf(k, 10); got != -1 {
			t.Errorf("prefixOf(%q) = %d; want -1", k, got)
		}
	}
}

// Events acknowledged before a session ended but not received count as
// lag, not loss.
func TestBehind(t *testing.T) {
	h := &history{events: [][]uint64{{ev(10, 0), ev(12, 2), ev(14, 4), ev(16, 6), ev(18, 8)}}}
	s := session{prefix: 0, start: 12, events: []uint64{ev(12, 2)}, knownAtEnd: 17}
	v := check(h, [][]*session{{&s}})
	if !v.ok() || v.behind != 2 || v.behindSessions != 1 || v.behindMax != 2 {
		t.Errorf("ok %v, behind %d in %d sessions (max %d); want ok, 2 in 1 (max 2)", v.ok(), v.behind, v.behindSessions, v.behindMax)
	}
}
