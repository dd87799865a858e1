package lease

import (
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/port"
)

// Under a namespace (Config.Namespaced) a client may keep alive only the
// namespace's leases; another's is answered as etcd answers for a lease it
// does not have (TTL 0) and never refreshed. Whether a lease is the
// namespace's is decided once, by the shell (port.LeaseCheck: etcd's
// TimeToLive with the lease's keys), and remembered here as a verdict:
// every request for the lease after that, from any stream, is served on
// the verdict with no call to etcd. While a check is in flight the
// lease's requests wait for it, as they wait for a refresh.
//
// A verdict is forgotten when the lease is gone: revoked through the
// proxy, answered TTL 0 by etcd, not listed by LeaseLeases (Listed), or
// not seen alive (checked, or refreshed) for its TTL, since it may have
// expired since. A forgotten lease is checked again when next asked for.
// Verdicts exist only for leases etcd has, so their number is bounded by
// etcd's.

// scope is the machine's ownership memory.
type scope struct {
	verdicts map[int64]*verdict
	// checking: leases with a check in flight; retry: leases whose check
	// failed while requests wait, checked again at the next sweep.
	checking map[int64]*lease
	retry    map[int64]*lease
}

// verdict is whether one lease is the namespace's.
type verdict struct {
	mine   bool
	ttl    int64     // granted TTL, seconds
	seen   time.Time // when the proxy last saw it alive
	header *pb.ResponseHeader
}

func newScope() scope {
	return scope{verdicts: map[int64]*verdict{}, checking: map[int64]*lease{}, retry: map[int64]*lease{}}
}

func (sc *scope) forget(id int64) { delete(sc.verdicts, id) }

func (sc *scope) seen(id int64, now time.Time) {
	if v := sc.verdicts[id]; v != nil {
		v.seen = now
	}
}

// Verdict is what the machine knows of a lease's ownership.
type Verdict uint8

const (
	Unknown Verdict = iota // not checked, or forgotten
	Mine                   // the namespace's
	Foreign                // another's
)

// inScope serves request of stream s for l under a namespace as far as
// ownership decides it, and reports whether l is the namespace's (the
// caller then serves it as any lease). Otherwise the request waits for a
// check (or is owed, on a held stream), or is answered TTL 0.
func (m *Machine) inScope(s port.StreamID, st *stream, l *lease, held bool) bool {
	v := m.scope.verdicts[l.id]
	if v != nil && v.mine {
		return true
	}
	if held {
		m.owe(st, l.id)
	} else if v == nil {
		l.waiters = append(l.waiters, s)
	} else {
		m.stats.AnsweredLocal++
		m.answer(s, &pb.LeaseKeepAliveResponse{Header: v.header, ID: l.id})
	}
	if v == nil {
		m.check(l)
	}
	return false
}

// check asks the shell whether l is the namespace's, unless it is asking.
func (m *Machine) check(l *lease) {
	if l.checking {
		return
	}
	l.checking = true
	m.scope.checking[l.id] = l
	delete(m.scope.retry, l.id)
	m.stats.Checks++
	m.out.LeaseCheck(port.LeaseCheck{ID: l.id})
}

// Checked takes the answer to a lease check, or a verdict the shell
// learned otherwise (a LeaseTimeToLive or LeaseRevoke it checked itself):
// the verdict is remembered, and the requests waiting for it are served.
func (m *Machine) Checked(id int64, r port.LeaseCheckResult) {
	l := m.leases[id]
	if l != nil && l.checking {
		l.checking = false
		delete(m.scope.checking, id)
	}
	if r.Err != nil {
		if l != nil && len(l.waiters) > 0 {
			m.scope.retry[id] = l
		}
		return
	}
	if r.Found {
		m.scope.verdicts[id] = &verdict{mine: r.Mine, ttl: r.TTL, seen: m.now, header: r.Header}
	} else {
		m.scope.forget(id)
	}
	if l == nil || len(l.waiters) == 0 {
		return
	}
	if r.Found && r.Mine {
		if !l.inflight {
			m.refresh(l) // the requests waiting for the check wait for it
		}
		return
	}
	// etcd's answer for a lease it does not have.
	waiters := l.waiters
	l.waiters = nil
	for _, s := range waiters {
		m.stats.AnsweredLocal++
		m.answer(s, &pb.LeaseKeepAliveResponse{Header: r.Header, ID: id})
	}
	if !l.inflight && !l.known {
		delete(m.leases, id)
	}
}

// Listed takes the leases etcd listed (LeaseLeases): the verdicts of those
// it no longer has are forgotten.
func (m *Machine) Listed(ids []int64) {
	listed := make(map[int64]bool, len(ids))
	for _, id := range ids {
		listed[id] = true
	}
	for id := range m.scope.verdicts {
		if !listed[id] {
			delete(m.scope.verdicts, id)
		}
	}
}

// Verdicts reports what the machine knows of each lease's ownership.
func (m *Machine) Verdicts(ids []int64) []Verdict {
	out := make([]Verdict, len(ids))
	for i, id := range ids {
		switch v := m.scope.verdicts[id]; {
		case v == nil:
		case v.mine:
			out[i] = Mine
		default:
			out[i] = Foreign
		}
	}
	return out
}

// sweepScope forgets verdicts of leases not seen alive for their TTL, and
// checks again the leases whose check failed while requests wait.
func (m *Machine) sweepScope() {
	for id, v := range m.scope.verdicts {
		if m.now.Sub(v.seen) > time.Duration(max(v.ttl, 1))*time.Second {
			delete(m.scope.verdicts, id)
		}
	}
	ids := make([]int64, 0, len(m.scope.retry))
	for id := range m.scope.retry {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		l := m.scope.retry[id]
		delete(m.scope.retry, id)
		if m.leases[id] == l && len(l.waiters) > 0 {
			m.check(l)
		}
	}
}
