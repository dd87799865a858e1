package watch

import (
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// StreamID names a client watch stream; the caller assigns them.
type StreamID uint64

// Upstream names one of the two upstream watch streams.
type Upstream int

const (
	// Shared carries the group watchers, all synced, so that progress
	// requests on it are answered.
	Shared Upstream = iota
	// Own carries watchers of a single client watcher that is catching up
	// or was compacted.
	Own
	numUpstreams
)

func (u Upstream) String() string {
	if u == Shared {
		return "shared"
	}
	return "own"
}

// Config sets the machine's bounds.
type Config struct {
	// Prefix is the namespace: event keys from etcd lose it before they
	// reach clients. Create requests arrive already prefixed.
	Prefix keyspace.Prefix
	// HistoryEvents bounds each group's history window, in events.
	HistoryEvents int
	// StreamBufferBytes bounds the bytes queued for one client stream; a
	// stream over it stops receiving events until it drains below half.
	StreamBufferBytes int
	// FragmentBytes is the response size above which a watcher that asked
	// for fragments gets its events in several responses (etcd's
	// --max-request-bytes).
	FragmentBytes int
	// ProgressInterval is how often a watcher that asked for progress
	// notifications gets one when idle (etcd's default is 10 minutes).
	ProgressInterval time.Duration
	// RetryInterval is how soon an unanswered upstream progress request or
	// a failed revision fetch is tried again.
	RetryInterval time.Duration
}

// DefaultConfig returns bounds suited to a production proxy.
func DefaultConfig() Config {
	return Config{
		HistoryEvents:     4096,
		StreamBufferBytes: 4 << 20,
		FragmentBytes:     1536 * 1024,
		ProgressInterval:  10 * time.Minute,
		RetryInterval:     100 * time.Millisecond,
	}
}

// Send is a response for a client stream.
type Send struct {
	Stream StreamID
	Resp   *pb.WatchResponse
	// Size is the response's encoded size, counted against the stream's
	// buffer until the caller reports it written with Sent.
	Size int
}

// UpstreamRequest is a request for one of the upstream watch streams.
type UpstreamRequest struct {
	Stream Upstream
	Req    *pb.WatchRequest
}

// Fetch asks the caller for the store's current revision with a
// linearizable Range on [Key, End) at Revision (0 for the latest), limit 1,
// with the client's auth Token. The answer comes back through Fetched.
type Fetch struct {
	ID       uint64
	Token    string
	Key, End []byte
	Revision int64
}

// FetchResult is the answer to a Fetch.
type FetchResult struct {
	// Header is the Range response's header: its revision is the store's
	// current revision.
	Header *pb.ResponseHeader
	// Compacted reports that Fetch.Revision has been compacted.
	Compacted bool
	// Err is the error etcd answered with (permission denied, invalid
	// token...), or a transport error, which makes the machine try again.
	Err error
	// Retry reports a transport error: the fetch is tried again later.
	Retry bool
}

// Ready is what the caller must do after feeding inputs.
type Ready struct {
	Sends    []Send
	Upstream []UpstreamRequest
	Fetches  []Fetch
}

// Empty reports whether there is nothing to do.
func (r Ready) Empty() bool {
	return len(r.Sends) == 0 && len(r.Upstream) == 0 && len(r.Fetches) == 0
}
