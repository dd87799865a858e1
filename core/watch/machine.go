package watch

import (
	"cmp"
	"maps"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/simfault"
)

// Config sets the machine's bounds.
type Config struct {
	// Prefix is the namespace: event keys from etcd lose it before they
	// reach clients. Create requests arrive already prefixed.
	Prefix keyspace.Prefix
	// HistoryEvents bounds each group's history window, in events.
	HistoryEvents int
	// FragmentBytes is the response size above which a watcher that asked
	// for fragments gets its events in several responses (etcd's
	// --max-request-bytes).
	FragmentBytes int
	// ProgressInterval, when positive, is the proxy's own cadence of
	// progress notifications to idle watchers that asked for them. When
	// zero (the default) the cadence is etcd's: the progress notifications
	// etcd sends on a range's upstream watch are passed on to the range's
	// watchers.
	ProgressInterval time.Duration
	// RetryInterval is how soon an unanswered upstream progress request is
	// sent again.
	RetryInterval time.Duration
	// MaxWatchersPerStream, when positive, bounds the watches one client
	// stream may hold (created or waiting for their turn): a create beyond
	// it is refused with ReasonTooManyWatches (--max-watches-per-stream).
	MaxWatchersPerStream int
	// Lane is the pair of upstream streams the machine's watches go on
	// (zero: port.DefaultLane). The composite runs one machine per auth
	// identity, each on its own lane.
	Lane port.Lane
}

// DefaultConfig returns bounds suited to a production proxy.
func DefaultConfig() Config {
	return Config{
		HistoryEvents: 4096,
		FragmentBytes: 1536 * 1024,
		RetryInterval: 100 * time.Millisecond,
	}
}

// Machine is the watch fan-out state machine. It is not safe for concurrent
// use: one event loop owns it, through the composite node.
type Machine struct {
	cfg Config
	out *port.Outbox
	now time.Time

	streams map[port.StreamID]*stream
	groups  map[rangeKey]*group
	// Upstream watches by their ID, on the shared and the catch-up stream.
	shared   map[int64]*group
	catchUps map[int64]*catchUp
	nextUp   int64
	// futures are the groups whose upstream watch started past the latest
	// revision seen, oldest first (see future.go).
	futures []future

	fetches map[port.FetchID]*waiters

	progress [port.NumWatchUpstreams]upstreamProgress
	// unconfirmed: per upstream stream, the IDs of the creates sent and
	// not answered yet, in the order sent (etcd answers creates in order,
	// and a refusal without the ID: see UpstreamResponse).
	unconfirmed [port.NumWatchUpstreams][]int64
	lastNotify  time.Time
	lastRev     int64              // highest revision seen anywhere
	lastHeader  *pb.ResponseHeader // cluster, member and term of the latest answer

	stats Stats
}

// waiters are what a revision fetch was asked for: creates waiting for
// their revision, and RequestProgress calls.
type waiters struct {
	watchers []*watcher
	streams  []*stream
}

// New returns a machine with cfg's bounds that writes its outputs to out;
// now is the clock's reading.
func New(cfg Config, out *port.Outbox, now time.Time) *Machine {
	d := DefaultConfig()
	if cfg.HistoryEvents <= 0 {
		cfg.HistoryEvents = d.HistoryEvents
	}
	if cfg.FragmentBytes <= 0 {
		cfg.FragmentBytes = d.FragmentBytes
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = d.RetryInterval
	}
	if cfg.Lane == (port.Lane{}) {
		cfg.Lane = port.DefaultLane
	}
	return &Machine{
		cfg: cfg, out: out, now: now, lastNotify: now,
		streams: map[port.StreamID]*stream{}, groups: map[rangeKey]*group{},
		shared: map[int64]*group{}, catchUps: map[int64]*catchUp{}, fetches: map[port.FetchID]*waiters{},
	}
}

// OpenStream registers a client watch stream; token is its auth token (""
// for none), used for the revision fetches made on its behalf, and flow is
// its flow control.
func (m *Machine) OpenStream(id port.StreamID, token string, flow *port.Flow) {
	m.streams[id] = &stream{id: id, token: token, flow: flow, watchers: map[int64]*watcher{}}
}

// CloseStream forgets a client stream and everything it watched.
func (m *Machine) CloseStream(id port.StreamID) {
	s := m.streams[id]
	if s == nil {
		return
	}
	s.closed = true
	for _, r := range s.queue {
		if r.create != nil {
			m.stats.Watchers--
			m.forgetCreate(r.create)
		}
	}
	s.queue = nil
	for len(s.order) > 0 {
		m.drop(s.order[len(s.order)-1])
	}
	delete(m.streams, id)
}

// Tick advances the machine's clock: unanswered upstream progress requests
// are sent again, and with the proxy's own progress cadence idle watchers
// that asked for notifications get one.
func (m *Machine) Tick(now time.Time) {
	m.now = now
	m.pruneFutures()
	m.retryProgress()
	if m.cfg.ProgressInterval > 0 && now.Sub(m.lastNotify) >= m.cfg.ProgressInterval {
		m.lastNotify = now
		m.notifyIdle()
	}
}

// ---- helpers ----

// seen records a response header from etcd.
func (m *Machine) seen(h *pb.ResponseHeader) {
	if h == nil {
		return
	}
	m.lastHeader = h
	if h.Revision > m.lastRev {
		m.lastRev = h.Revision
	}
}

// headerAt returns etcd's response header as of revision rev.
func (m *Machine) headerAt(rev int64) *pb.ResponseHeader {
	h := &pb.ResponseHeader{Revision: rev}
	if m.lastHeader != nil {
		h.ClusterId, h.MemberId, h.RaftTerm = m.lastHeader.ClusterId, m.lastHeader.MemberId, m.lastHeader.RaftTerm
	}
	return h
}

// header returns etcd's response header as of the latest revision seen.
func (m *Machine) header() *pb.ResponseHeader { return m.headerAt(m.lastRev) }

func (m *Machine) sortedStreams() []*stream { return sortedByKey(m.streams) }

func (m *Machine) sortedGroups() []*group {
	if fault("map-order") {
		return slices.Collect(maps.Values(m.shared))
	}
	return sortedByKey(m.shared)
}

func (m *Machine) sortedCatchUps() []*catchUp { return sortedByKey(m.catchUps) }

// sortedByKey returns a map's values in the order of their keys: the
// machine never lets Go's map order reach its outputs.
func sortedByKey[K cmp.Ordered, V any](mp map[K]V) []V {
	out := make([]V, 0, len(mp))
	for _, k := range slices.Sorted(maps.Keys(mp)) {
		out = append(out, mp[k])
	}
	return out
}

// fault reports whether the simulation's mutation test planted the named
// fault (never, outside the simfaults build).
func fault(name string) bool { return simfault.On(name) }

// Lane returns the upstream streams the machine's watches go on.
func (m *Machine) Lane() port.Lane { return m.cfg.Lane }
