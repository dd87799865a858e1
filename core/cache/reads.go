package cache

import (
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/simfault"
)

// DefaultConsistentWait is Config.ConsistentWait unless configured.
const DefaultConsistentWait = time.Second

// DefaultConfirmInterval is Config.ConfirmInterval unless configured.
const DefaultConfirmInterval = time.Second

// DefaultIdleAfter is Config.IdleAfter unless configured.
const DefaultIdleAfter = 5 * time.Minute

// Read is a client's cacheable read (see KeyOf), waiting for the cache's
// answer (a port.Answer for Call).
type Read struct {
	Call port.CallID
	Key  Key
	// Consistent: the client asked for a linearizable read.
	Consistent bool
	// Floor is the highest revision the client's connection has been
	// answered at: no answer from the cache goes below it.
	Floor int64
}

// call is a consistent read waiting for its revision and its delivery.
type call struct {
	Read
	deadline time.Time
	target   int64 // etcd's revision when the call was made (0: not known yet)
}

// Read answers r, at once or (a consistent read) once etcd's revision is
// known and delivered. A serializable read is answered from an entry when
// the cache is live; a consistent read waits for the next revision fetch
// to start after it (one fetch in flight, for every consistent read that
// arrived meanwhile) and then until the subscription has delivered that
// revision, or ConsistentWait, whichever comes first. The answer's header
// carries the later of the entry's revision and the revision delivered,
// at which the entry is exact (see answer); it is never below r.Floor.
//
// Entries are filled by reads without credentials, so they are served
// only while etcd answers such reads: the fetches (a plain read without a
// token) confirm it at least every ConfirmInterval while reads come, and
// no entry is served more than twice that after the last confirmation. A
// fetch etcd refuses (auth was enabled) drops every entry, and nothing is
// served until one is answered again: the window in which a serializable
// read may still be answered after auth is enabled is one interval, as a
// member that has not applied the change yet answers one.
func (c *Cache) Read(r Read) {
	c.readSince, c.lastRead = true, c.now
	c.confirm()
	if !r.Consistent {
		c.answer(r, true)
		return
	}
	if !c.cfg.ConsistentReads || !c.serving() {
		c.answer(r, false)
		return
	}
	cl := &call{Read: r, deadline: c.now.Add(c.cfg.ConsistentWait)}
	switch {
	case c.fetch != 0 && c.out.Joinable(c.fetch):
		c.fetching = append(c.fetching, cl) // not sent yet: it covers this read
	case c.fetch != 0:
		c.next = append(c.next, cl)
	default:
		c.next = append(c.next, cl)
		c.startFetch()
	}
}

// answer gives r its answer: the entry, when ok and there is one to serve
// at r's floor or above. The entry is exact at its fill's revision and, as
// no event touching its range has come since, at the revision delivered:
// the answer carries the later of the two.
func (c *Cache) answer(r Read, ok bool) {
	var e *entry
	if ok && c.serving() {
		e = c.entries[r.Key]
	}
	if e != nil && max(c.delivered, e.rev) < r.Floor && !simfault.On("cache-ignore-floor") {
		e = nil
	}
	if e == nil {
		c.stats.Misses++
		c.out.Answer(port.Answer{Call: r.Call})
		return
	}
	c.stats.Hits++
	if r.Consistent {
		c.stats.ConsistentHits++
	}
	c.lru.MoveToFront(e.elem)
	h := e.resp.Header
	c.out.Answer(port.Answer{Call: r.Call, Resp: &pb.RangeResponse{
		Header: &pb.ResponseHeader{ClusterId: h.GetClusterId(), MemberId: h.GetMemberId(), RaftTerm: h.GetRaftTerm(), Revision: max(c.delivered, e.rev)},
		Kvs:    e.resp.Kvs, More: e.resp.More, Count: e.resp.Count,
	}})
}

// serving reports whether entries may be served: the subscription is
// live, and etcd answered a read without credentials lately.
func (c *Cache) serving() bool {
	return (c.live || simfault.On("cache-serve-not-live")) && (!c.paused || simfault.On("cache-serve-rewinding")) && !c.refused && c.now.Sub(c.confirmed) <= 2*c.cfg.ConfirmInterval
}

// Idle reports whether no read came for IdleAfter: the caller may close
// the subscription (after Reset).
func (c *Cache) Idle() bool { return c.now.Sub(c.lastRead) >= c.cfg.IdleAfter }

// confirm starts a fetch when reads came and none started for
// ConfirmInterval.
func (c *Cache) confirm() {
	if c.fetch == 0 && c.readSince && c.now.Sub(c.fetchedAt) >= c.cfg.ConfirmInterval {
		c.startFetch()
	}
}

// startFetch asks for etcd's current revision for the consistent reads
// that arrived since the last fetch started.
func (c *Cache) startFetch() {
	c.fetch = c.out.Fetch(port.Cache, port.Fetch{Key: []byte{0}})
	c.fetching, c.next = c.next, nil
	c.readSince, c.fetchedAt = false, c.now
	c.stats.Fetches++
}

// Fetched takes the answer to the cache's revision fetch. It reports
// whether the subscription must be asked for progress: some read waits for
// a revision it has not delivered yet.
func (c *Cache) Fetched(id port.FetchID, r port.FetchResult) (wantProgress bool) {
	if id != c.fetch {
		return false
	}
	c.fetch = 0
	calls := c.fetching
	c.fetching = nil
	if r.Err != nil {
		c.stats.Refusals++
		c.refused = true
		c.dropAll()
	} else {
		c.refused, c.confirmed = false, c.now
	}
	for _, cl := range calls {
		if r.Err != nil {
			c.answer(cl.Read, false)
			continue
		}
		cl.target = r.Header.GetRevision()
		c.due = append(c.due, cl)
	}
	c.release()
	wantProgress = len(c.due) > 0
	if len(c.next) > 0 {
		c.startFetch()
	}
	return wantProgress
}

// release answers the consistent reads whose revision has been delivered.
func (c *Cache) release() {
	kept := c.due[:0]
	for _, cl := range c.due {
		if cl.target <= c.delivered || simfault.On("cache-consistent-early") {
			c.answer(cl.Read, true)
		} else {
			kept = append(kept, cl)
		}
	}
	clear(c.due[len(kept):])
	c.due = kept
}

// Tick tells the cache the time: consistent reads that waited
// ConsistentWait are forwarded.
func (c *Cache) Tick(now time.Time) {
	c.now = now
	c.confirm()
	for _, l := range []*[]*call{&c.next, &c.fetching, &c.due} {
		kept := (*l)[:0]
		for _, cl := range *l {
			if now.Before(cl.deadline) {
				kept = append(kept, cl)
				continue
			}
			c.stats.ConsistentTimeouts++
			c.answer(cl.Read, false)
		}
		clear((*l)[len(kept):])
		*l = kept
	}
}
