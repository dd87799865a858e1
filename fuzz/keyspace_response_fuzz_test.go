package fuzz

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// FuzzNamespaceResponses checks the way back: what etcd answers under a
// prefix reaches the client with the prefix stripped, and nothing outside
// the prefix reaches it. Keys are built from the fuzzer's bytes, half of
// them inside the prefix (prefix + suffix), half anywhere. For each: a key
// prefixed then stripped is itself again; a watch response keeps exactly
// the events inside the prefix, in order, stripped; a lease's keys keep
// exactly those inside, and report whether all were.
func FuzzNamespaceResponses(f *testing.F) {
	f.Add([]byte("p/"), []byte("a\x00b\x01p/c\x00\xff"))
	f.Add([]byte("\xff"), []byte("\xff\x00\x00\xfe\x01"))
	f.Add([]byte("a\xff"), []byte("a\xff\x00b\x01\x00"))
	f.Fuzz(func(t *testing.T, prefix, raw []byte) {
		if len(prefix) == 0 {
			t.Skip("the empty prefix translates nothing")
		}
		x := keyspace.New(string(prefix))
		// Keys: raw split at 0x00; a piece starting with 0x01 is put
		// inside the prefix.
		var keys [][]byte
		for _, piece := range bytes.Split(raw, []byte{0}) {
			if len(piece) > 0 && piece[0] == 1 {
				piece = append(bytes.Clone(prefix), piece[1:]...)
			}
			keys = append(keys, piece)
		}
		inside := func(k []byte) bool { return bytes.HasPrefix(k, prefix) }

		for _, k := range keys {
			if got := x.Strip(x.Key(bytes.Clone(k))); len(k) > 0 && !bytes.Equal(got, k) {
				t.Fatalf("Strip(Key(%q)) = %q", k, got)
			}
			if x.Contains(k) != inside(k) {
				t.Fatalf("Contains(%q) = %v under %q", k, x.Contains(k), prefix)
			}
		}

		var evs []*mvccpb.Event
		var want [][]byte
		for i, k := range keys {
			evs = append(evs, &mvccpb.Event{Kv: &mvccpb.KeyValue{Key: bytes.Clone(k), ModRevision: int64(i)}, PrevKv: &mvccpb.KeyValue{Key: bytes.Clone(k)}})
			if inside(k) {
				want = append(want, k[len(prefix):])
			}
		}
		r := &pb.WatchResponse{Events: evs}
		x.WatchResponse(r)
		if len(r.Events) != len(want) {
			t.Fatalf("watch response kept %d events of %d keys, want %d (those inside %q)", len(r.Events), len(keys), len(want), prefix)
		}
		for i, ev := range r.Events {
			if !bytes.Equal(ev.Kv.Key, want[i]) || !bytes.Equal(ev.PrevKv.Key, want[i]) {
				t.Fatalf("event %d: key %q prev %q, want %q", i, ev.Kv.Key, ev.PrevKv.Key, want[i])
			}
			if i > 0 && ev.Kv.ModRevision <= r.Events[i-1].Kv.ModRevision {
				t.Fatalf("events out of order after stripping")
			}
		}

		lk := make([][]byte, len(keys))
		for i, k := range keys {
			lk[i] = bytes.Clone(k)
		}
		got, all := x.LeaseKeys(lk)
		if all != (len(want) == len(keys)) || len(got) != len(want) {
			t.Fatalf("lease keys: %q (all %v), want %q (all %v)", got, all, want, len(want) == len(keys))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("lease key %d: %q, want %q", i, got[i], want[i])
			}
		}
	})
}
