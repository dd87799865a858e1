package watch

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// FuzzFragments checks fragment reassembly both ways, with events and
// split points decoded from the fuzzer's bytes:
//
//   - the proxy's own splitting (fragment, for a client that asked for
//     fragments) gives responses of at most the limit (or of one event),
//     every one but the last marked as a fragment, whose events joined are
//     the original ones in order, and reassembly (fragments.add) of those
//     responses gives the original events back, once, at the last;
//   - reassembly of any sequence of upstream responses, fragments or not,
//     as etcd may split them: each complete list is exactly the events of
//     the responses since the last complete one, and nothing is kept once
//     a list is complete.
//
// It is fuzzed in CI with the other targets (package fuzz holds those
// that need only exported code; this one needs the machine's own).
func FuzzFragments(f *testing.F) {
	f.Add([]byte{4, 10, 200, 1, 3, 0, 255, 17, 9})
	f.Add([]byte{0, 1, 1, 1, 1, 1, 0, 0, 0})
	f.Add(bytes.Repeat([]byte{250, 7}, 40))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := fragInput{b: data}
		limit := 64 + int(d.byte())*32
		var evs []*mvccpb.Event
		var flags []bool
		for !d.done() && len(evs) < 200 {
			evs = append(evs, d.event(len(evs)))
			flags = append(flags, d.byte()%3 == 0)
		}

		// The proxy's splitting, then reassembly.
		resp := &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 9}, WatchId: 3, Events: evs}
		parts := fragment(resp, limit)
		var joined []*mvccpb.Event
		var r fragments
		for i, p := range parts {
			last := i == len(parts)-1
			if p.Fragment == last {
				t.Fatalf("part %d of %d: fragment=%v", i, len(parts), p.Fragment)
			}
			if len(p.Events) > 1 && proto.Size(p) > limit {
				t.Fatalf("part %d: %d events in %d bytes, above the limit %d", i, len(p.Events), proto.Size(p), limit)
			}
			if len(parts) > 1 && len(p.Events) == 0 {
				t.Fatalf("part %d of %d carries no event", i, len(parts))
			}
			joined = append(joined, p.Events...)
			got, done := r.add(p)
			if done != last {
				t.Fatalf("part %d of %d: reassembly done=%v", i, len(parts), done)
			}
			if done && !sameEvents(got, evs) {
				t.Fatalf("reassembled %d events, want the %d split", len(got), len(evs))
			}
		}
		if !sameEvents(joined, evs) {
			t.Fatalf("the parts carry %d events, want the %d split", len(joined), len(evs))
		}
		if r.events != nil {
			t.Fatalf("%d events kept after a complete response", len(r.events))
		}

		// Any sequence etcd may send: one event per response, the
		// fuzzer choosing which are fragments.
		var want []*mvccpb.Event
		for i, ev := range evs {
			want = append(want, ev)
			got, done := r.add(&pb.WatchResponse{Events: []*mvccpb.Event{ev}, Fragment: flags[i]})
			if done == flags[i] {
				t.Fatalf("response %d (fragment=%v): done=%v", i, flags[i], done)
			}
			if done {
				if !sameEvents(got, want) {
					t.Fatalf("response %d completed %d events, want %d", i, len(got), len(want))
				}
				want = nil
				if r.events != nil {
					t.Fatalf("%d events kept after a complete response", len(r.events))
				}
			}
		}
		if len(r.events) != len(want) {
			t.Fatalf("%d events held for an unfinished response, want %d", len(r.events), len(want))
		}
	})
}

// sameEvents reports whether a and b are the same events (the same
// pointers) in the same order.
func sameEvents(a, b []*mvccpb.Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fragInput reads events from the fuzzer's bytes.
type fragInput struct {
	b []byte
	i int
}

func (d *fragInput) done() bool { return d.i >= len(d.b) }

func (d *fragInput) byte() byte {
	if d.done() {
		return 0
	}
	c := d.b[d.i]
	d.i++
	return c
}

// event makes an event whose value size (0 to a few KiB) the input picks.
func (d *fragInput) event(i int) *mvccpb.Event {
	size := int(d.byte()) * int(d.byte()%32+1)
	return &mvccpb.Event{Kv: &mvccpb.KeyValue{
		Key: []byte{'k', byte(i)}, Value: bytes.Repeat([]byte{'v'}, size), ModRevision: int64(i/3 + 1),
	}}
}
