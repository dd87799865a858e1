package cache

import (
	"bytes"
	"container/list"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/simfault"
)

// Config bounds the cache.
type Config struct {
	// MaxBytes caps the memory the entries hold, as footprint estimates
	// it (0: nothing is cached).
	MaxBytes int
	// MaxEntryBytes: an entry larger than this is not kept (0: a
	// sixteenth of MaxBytes).
	MaxEntryBytes int
	// ConsistentReads lets linearizable reads be answered from the cache
	// (see Read); without it they are forwarded.
	ConsistentReads bool
	// ConsistentWait bounds how long a consistent read waits for etcd's
	// revision and its delivery before it is forwarded instead (0:
	// DefaultConsistentWait).
	ConsistentWait time.Duration
	// ConfirmInterval: while reads come, etcd's answer to a plain read
	// without credentials is confirmed this often (0:
	// DefaultConfirmInterval); see Read.
	ConfirmInterval time.Duration
	// IdleAfter: with no read for this long the cache drops everything and
	// its subscription is closed, until the next read (0:
	// DefaultIdleAfter).
	IdleAfter time.Duration
}

// Key names an entry: the caller's identity and the request, encoded.
type Key struct {
	Identity string
	Request  string
}

// KeyOf returns the key of a request made by identity, or false when the
// request is not cacheable: only reads of the current revision are (a read
// at a revision is forwarded, so that compacted and future revisions get
// etcd's own answer). A linearizable read and a serializable read of the
// same range share the key: what differs is when an entry may answer them
// (see Read).
func KeyOf(identity string, r *pb.RangeRequest) (Key, bool) {
	if r.Revision != 0 {
		return Key{}, false
	}
	ser := r.Serializable
	r.Serializable = true
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	r.Serializable = ser
	if err != nil {
		return Key{}, false
	}
	if simfault.On("cache-ignore-identity") {
		identity = ""
	}
	return Key{Identity: identity, Request: string(b)}, true
}

// Cache is the machine. It is not safe for concurrent use.
type Cache struct {
	cfg       Config
	out       *port.Outbox
	now       time.Time
	entries   map[Key]*entry
	lru       *list.List // of *entry, most recently used first
	bytes     int
	live      bool
	paused    bool  // the subscription's group is rewound behind it
	delivered int64 // the last revision the subscription delivered
	ranges    rangeIndex
	stats     Stats

	// consistent reads: those waiting for the next revision fetch, those
	// covered by the fetch in flight, and those waiting for the
	// subscription to deliver their revision
	next, fetching, due []*call
	fetch               port.FetchID // the fetch in flight (0: none)

	// confirmed is when etcd last answered a fetch (a read without
	// credentials); refused is set when it last refused one; readSince:
	// a read came since the last fetch started, at fetchedAt.
	confirmed time.Time
	refused   bool
	readSince bool
	fetchedAt time.Time
	lastRead  time.Time
}

type entry struct {
	key        Key
	start, end []byte // the range, etcd's encoding
	resp       *pb.RangeResponse
	rev        int64
	size       int
	elem       *list.Element
}

// Stats are the cache's counters and gauges.
type Stats struct {
	Hits, Misses int64 // reads answered from the cache, and forwarded
	// ConsistentHits: linearizable reads answered from the cache.
	ConsistentHits int64
	// ConsistentTimeouts: linearizable reads forwarded because etcd's
	// revision was not known or delivered within ConsistentWait.
	ConsistentTimeouts int64
	Fetches            int64 // revision fetches, for consistent reads and confirmations
	// Refusals: fetches etcd refused (auth enabled, say): entries dropped.
	Refusals      int64
	Fills         int64 // responses kept
	Refused       int64 // responses not kept: too large, older than delivered, or not live
	Invalidations int64 // entries dropped by an event
	Evictions     int64 // entries dropped for room
	Entries       int   // entries kept
	Bytes         int   // their encoded bytes
	Live          bool  // the cache serves
}

// New returns an empty cache, not live, that hands its answers and
// revision fetches to out; now is the clock's reading.
func New(cfg Config, out *port.Outbox, now time.Time) *Cache {
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = cfg.MaxBytes / 16
	}
	if cfg.ConsistentWait <= 0 {
		cfg.ConsistentWait = DefaultConsistentWait
	}
	if cfg.ConfirmInterval <= 0 {
		cfg.ConfirmInterval = DefaultConfirmInterval
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	return &Cache{cfg: cfg, out: out, now: now, entries: map[Key]*entry{}, lru: list.New()}
}

// Fill keeps etcd's response to the request named by k, whose range is
// [key, end) in etcd's encoding. The cache owns resp from then on.
func (c *Cache) Fill(k Key, key, end []byte, resp *pb.RangeResponse) {
	rev := resp.GetHeader().GetRevision()
	size := footprint(k, key, end, resp)
	if !c.live || c.refused || (rev < c.delivered && !simfault.On("cache-fill-stale")) || size > c.cfg.MaxEntryBytes || size > c.cfg.MaxBytes {
		c.stats.Refused++
		return
	}
	if old := c.entries[k]; old != nil {
		if old.rev >= rev {
			return // what is kept is as new
		}
		c.drop(old)
	}
	e := &entry{key: k, start: bytes.Clone(key), end: bytes.Clone(end), resp: resp, rev: rev, size: size}
	e.elem = c.lru.PushFront(e)
	c.entries[k] = e
	c.ranges.add(e)
	c.bytes += size
	c.stats.Fills++
	for c.bytes > c.cfg.MaxBytes {
		c.stats.Evictions++
		c.drop(c.lru.Back().Value.(*entry))
	}
}

// Per-entry and per-key-value memory beyond the encoded bytes: the
// entry, its list element, map and index slots, the response's header,
// and each decoded KeyValue's struct and slice headers (calibrated on Go
// 1.26, amd64, against the heap's growth: TestFootprintCoversTheHeap).
const (
	entryOverhead = 450
	kvOverhead    = 144
)

// footprint estimates the memory an entry holds: the response's encoded
// bytes (about what its keys and values take decoded), the request kept
// as its key, the range, and the overheads above. MaxBytes bounds the sum.
func footprint(k Key, key, end []byte, resp *pb.RangeResponse) int {
	return proto.Size(resp) + len(resp.Kvs)*kvOverhead + len(k.Request) + len(k.Identity) + len(key) + len(end) + entryOverhead
}

// Event takes one event the subscription delivered: every entry whose
// range holds key is dropped. The events of one revision come together,
// followed by Progress, which releases the reads waiting for them.
func (c *Cache) Event(key []byte, rev int64) {
	c.delivered = max(c.delivered, rev)
	if simfault.On("cache-no-invalidate") {
		return
	}
	for _, e := range c.ranges.touching(key) {
		c.stats.Invalidations++
		c.drop(e)
	}
}

// Progress says every event up to rev was delivered: after a progress
// notification, or after the events of one watch response.
func (c *Cache) Progress(rev int64) {
	c.delivered = max(c.delivered, rev)
	c.release()
}

// Delivered is the last revision the subscription delivered.
func (c *Cache) Delivered() int64 { return c.delivered }

// SetLive says whether the subscription is live: every event etcd made is
// delivered within the stream's latency. Nothing is served or kept while
// it is not.
func (c *Cache) SetLive(live bool) { c.live = live }

// SetPaused says whether the subscription's upstream watch is rewound
// behind what it has delivered (another watcher of its range started
// before the group's history): until the rewound watch has caught up,
// nothing new reaches the subscription, so nothing is served.
func (c *Cache) SetPaused(paused bool) { c.paused = paused }

// Live reports whether the cache serves.
func (c *Cache) Live() bool { return c.live }

// Reset drops every entry: the subscription lost events (its watch was
// cancelled), so no entry can be trusted. It is not live until SetLive.
func (c *Cache) Reset() {
	c.dropAll()
	c.live = false
}

func (c *Cache) dropAll() {
	for _, e := range c.entries {
		c.drop(e)
	}
}

func (c *Cache) drop(e *entry) {
	delete(c.entries, e.key)
	c.lru.Remove(e.elem)
	c.ranges.remove(e)
	c.bytes -= e.size
}

// Stats returns the counters and gauges.
func (c *Cache) Stats() Stats {
	s := c.stats
	s.Entries, s.Bytes, s.Live = len(c.entries), c.bytes, c.live
	return s
}
