package port

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Send is a response for a client stream: a watch response, or a
// keep-alive answer (Lease).
type Send struct {
	Stream StreamID
	// Watch is the watch response, or nil for a watcher's run of shared
	// events (Shared), whose response is made of WatchID, Header and the
	// events alone: see Response.
	Watch *pb.WatchResponse
	Lease *pb.LeaseKeepAliveResponse
	// Shared, when set, is the run of events the response carries, handed
	// unchanged to every watcher that gets it: the shell may encode it once
	// for all of them.
	Shared *SharedEvents
	// WatchID and Header make the response when Watch is nil. A queued
	// response of shared events is then no object of its own: at 10,000
	// watchers on a key, responses waiting for slow readers were most of
	// the proxy's memory.
	WatchID int64
	Header  *pb.ResponseHeader
	// Size is the response's encoded size, counted against the stream's
	// bound until the shell reports it written.
	Size int
}

// Response returns the watch response the send carries (nil for a
// keep-alive answer), made on the spot for a run of shared events.
func (s Send) Response() *pb.WatchResponse {
	if s.Watch != nil || s.Shared == nil {
		return s.Watch
	}
	return &pb.WatchResponse{Header: s.Header, WatchId: s.WatchID, Events: s.Shared.Events}
}

func (s Send) String() string {
	if s.Lease != nil {
		return fmt.Sprintf("send stream=%d size=%d %v", s.Stream, s.Size, s.Lease)
	}
	return fmt.Sprintf("send stream=%d size=%d %v", s.Stream, s.Size, s.Response())
}

// SharedEvents is a run of whole revisions of events that several client
// watchers receive unchanged. Its identity (the pointer) is what tells the
// shell that the encoding can be reused.
type SharedEvents struct {
	Events []*mvccpb.Event
}

// UpstreamRequest is a request for one of the upstream streams: Watch for
// the watch streams, Lease for the keep-alive stream.
type UpstreamRequest struct {
	Upstream UpstreamID
	Watch    *pb.WatchRequest
	Lease    *pb.LeaseKeepAliveRequest
}

func (u UpstreamRequest) String() string {
	if u.Lease != nil {
		return fmt.Sprintf("%v: %v", u.Upstream, u.Lease)
	}
	return fmt.Sprintf("%v: %v", u.Upstream, u.Watch)
}

// FetchID names a revision fetch.
type FetchID uint64

// Fetch asks the shell for a linearizable Range on [Key, End) at Revision
// (0: the latest), limit 1, keys only, with the auth Token ("" for none).
// Its header's revision is the store's current revision. The answer comes
// back as a FetchResult with the same ID.
type Fetch struct {
	ID       FetchID
	For      Machines // the machines waiting for the answer
	Token    string
	Key, End []byte
	Revision int64
}

func (f Fetch) String() string {
	tok := ""
	if f.Token != "" {
		tok = " with token"
	}
	return fmt.Sprintf("fetch %d for %v: [%q, %q) at %d%s", f.ID, f.For, f.Key, f.End, f.Revision, tok)
}

// FetchResult is the answer to a Fetch: the Range response's header, or the
// error etcd (or the transport) answered with.
type FetchResult struct {
	Header *pb.ResponseHeader
	Err    error
}

func (r FetchResult) String() string {
	if r.Err != nil {
		return fmt.Sprintf("error %q", r.Err.Error())
	}
	return fmt.Sprintf("revision %d", r.Header.GetRevision())
}

// Ready is everything the shell must do after a step: sends to client
// streams, requests on upstream streams, revision fetches and member probes
// to run, switches of the member in use, client streams to end (after
// their sends), lease ownership checks to run, the read cache's answers
// to calls, and lanes of upstream streams to open and close.
type Ready struct {
	Sends       []Send
	Upstream    []UpstreamRequest
	Fetches     []Fetch
	Probes      []Probe
	Switches    []Switch
	Ends        []End
	LeaseChecks []LeaseCheck
	Answers     []Answer
	Lanes       []LaneStart
	LaneEnds    []LaneEnd
}
