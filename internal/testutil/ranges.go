package testutil

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// SameRange reports whether two Range responses hold the same result:
// count, more and key-values (their headers aside).
func SameRange(a, b *pb.RangeResponse) bool {
	if a.Count != b.Count || a.More != b.More || len(a.Kvs) != len(b.Kvs) {
		return false
	}
	for i := range a.Kvs {
		if !proto.Equal(a.Kvs[i], b.Kvs[i]) {
			return false
		}
	}
	return true
}

// RangeString prints a Range response's result, for failure messages.
func RangeString(r *pb.RangeResponse) string {
	s := fmt.Sprintf("count=%d more=%v", r.Count, r.More)
	for _, kv := range r.Kvs {
		s += fmt.Sprintf(" %s=%q@%d", kv.Key, kv.Value, kv.ModRevision)
	}
	return s
}
