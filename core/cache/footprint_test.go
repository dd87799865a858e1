package cache

import (
	"fmt"
	"runtime"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// The bytes the cache counts (and --cache-bytes bounds) are the heap its
// entries really hold, within a margin: filled with 20,000 small and
// larger responses, the heap grows by between 0.8 and 1.5 times the
// footprint counted.
func TestFootprintCoversTheHeap(t *testing.T) {
	for _, kvs := range []int{1, 10} {
		t.Run(fmt.Sprintf("%d key-values per response", kvs), func(t *testing.T) {
			c := live(Config{MaxBytes: 1 << 30, MaxEntryBytes: 1 << 30})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for i := range 20000 {
				r := &pb.RangeRequest{Key: fmt.Appendf(nil, "key/%06d", i), RangeEnd: fmt.Appendf(nil, "key/%06d0", i), Serializable: true}
				resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 5, ClusterId: 1, MemberId: 2, RaftTerm: 3}, Count: int64(kvs)}
				for j := range kvs {
					resp.Kvs = append(resp.Kvs, &mvccpb.KeyValue{Key: fmt.Appendf(nil, "key/%06d/%d", i, j), Value: make([]byte, 100), CreateRevision: 2, ModRevision: 5, Version: 3})
				}
				c.Fill(key(t, "", r), r.Key, r.RangeEnd, resp)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			grown := float64(after.HeapAlloc) - float64(before.HeapAlloc)
			counted := float64(c.Stats().Bytes)
			t.Logf("heap grew %.0f bytes, footprint counted %.0f (%.2f)", grown, counted, grown/counted)
			if c.Stats().Entries != 20000 || grown < 0.8*counted || grown > 1.5*counted {
				t.Fatalf("%d entries: heap grew %.0f bytes for %.0f counted", c.Stats().Entries, grown, counted)
			}
			runtime.KeepAlive(c)
		})
	}
}
