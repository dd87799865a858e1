package sim

import (
	"bytes"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Store is an in-memory model of etcd's MVCC store, as far as watches can
// tell: a revision counter, every event ever written (each with the
// previous key-value), and a compaction revision.
type Store struct {
	Rev       int64 // current revision; etcd starts at 1
	Compacted int64 // compaction revision, 0 if none
	history   []*mvccpb.Event
	live      map[string]*mvccpb.KeyValue
}

// NewStore returns an empty store at revision 1.
func NewStore() *Store { return &Store{Rev: 1, live: map[string]*mvccpb.KeyValue{}} }

// Op is one write of a transaction: a put (Delete false) or a delete of a
// single key.
type Op struct {
	Key, Value string
	Delete     bool
}

// Txn applies ops at one new revision, as one etcd transaction; deletes
// of absent keys are no-ops. It returns the revision, or 0 if nothing
// changed (etcd then does not advance the revision).
func (s *Store) Txn(ops ...Op) int64 {
	rev := s.Rev + 1
	changed := false
	for _, op := range ops {
		prev := s.live[op.Key]
		if op.Delete {
			if prev == nil {
				continue
			}
			delete(s.live, op.Key)
			s.history = append(s.history, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(op.Key), ModRevision: rev}, PrevKv: prev})
			changed = true
			continue
		}
		kv := &mvccpb.KeyValue{Key: []byte(op.Key), Value: []byte(op.Value), ModRevision: rev, CreateRevision: rev, Version: 1}
		if prev != nil {
			kv.CreateRevision, kv.Version = prev.CreateRevision, prev.Version+1
		}
		s.live[op.Key] = kv
		s.history = append(s.history, &mvccpb.Event{Type: mvccpb.PUT, Kv: kv, PrevKv: prev})
		changed = true
	}
	if !changed {
		return 0
	}
	s.Rev = rev
	return rev
}

// Compact compacts the store at rev (etcd refuses revisions beyond the
// current one and at or before the last compaction; so does this).
func (s *Store) Compact(rev int64) bool {
	if rev > s.Rev || rev <= s.Compacted {
		return false
	}
	s.Compacted = rev
	return true
}

// InRange reports whether key lies in a watch range with etcd's
// conventions: an empty end is the single key, "\x00" is "from key on".
func InRange(key, start, end []byte) bool {
	switch {
	case len(end) == 0:
		return bytes.Equal(key, start)
	case len(end) == 1 && end[0] == 0:
		return bytes.Compare(key, start) >= 0
	default:
		return bytes.Compare(key, start) >= 0 && bytes.Compare(key, end) < 0
	}
}

// Events returns the events in [key, end) with revision from..to, in order.
func (s *Store) Events(key, end []byte, from, to int64) []*mvccpb.Event {
	i := sort.Search(len(s.history), func(i int) bool { return s.history[i].Kv.ModRevision >= from })
	var out []*mvccpb.Event
	for ; i < len(s.history) && s.history[i].Kv.ModRevision <= to; i++ {
		if InRange(s.history[i].Kv.Key, key, end) {
			out = append(out, s.history[i])
		}
	}
	return out
}
