package node

import (
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// Input is one input to the node: one of the types below.
type Input interface {
	isInput()
	String() string
}

// Tick tells the node the time.
type Tick struct{ Now time.Time }

// OpenStream registers a client Watch stream. Token is the client's auth
// token ("" for none), used for the revision fetches made on its behalf.
// RequireLeader is set when the client asked for a leader
// (clientv3.WithRequireLeader): the stream is refused, or ended, with
// etcd's "no leader" error when the member in use has none.
//
// Identity names the auth identity the shell resolved Token to (the
// user, when known); streams of one identity share watch groups and a lane
// of upstream streams (see lanes.go). "" is the default lane: streams
// without a token.
//
// Lease is set for a client LeaseKeepAlive stream (the other fields do not
// apply to it).
type OpenStream struct {
	Stream        port.StreamID
	Token         string
	Identity      string
	RequireLeader bool
	Lease         bool
}

// KeepAlive is a client's keep-alive request for lease ID.
type KeepAlive struct {
	Stream port.StreamID
	ID     int64
}

// LeaseRevoked reports a lease revoked through the proxy.
type LeaseRevoked struct{ ID int64 }

// LeaseChecked answers a lease ownership check (port.LeaseCheck), or
// reports a verdict the shell learned checking a LeaseTimeToLive or
// LeaseRevoke under a namespace.
type LeaseChecked struct {
	ID     int64
	Result port.LeaseCheckResult
}

// LeasesListed reports the leases etcd listed for a LeaseLeases call.
type LeasesListed struct{ IDs []int64 }

// CloseStream ends a client stream and everything it holds.
type CloseStream struct{ Stream port.StreamID }

// WatchCreate is a client's watch create request, in etcd's keyspace
// (namespace applied).
type WatchCreate struct {
	Stream port.StreamID
	Req    *pb.WatchCreateRequest
}

// WatchCancel is a client's watch cancel request.
type WatchCancel struct {
	Stream  port.StreamID
	WatchID int64
}

// WatchProgress is a client's progress request.
type WatchProgress struct{ Stream port.StreamID }

// Written reports bytes of a stream's responses written to the client.
type Written struct {
	Stream port.StreamID
	Bytes  int
}

// UpstreamResponse is a response received on an upstream stream: Watch on
// a watch stream, Lease on the keep-alive stream.
type UpstreamResponse struct {
	Upstream port.UpstreamID
	Watch    *pb.WatchResponse
	Lease    *pb.LeaseKeepAliveResponse
}

// UpstreamLost reports that an upstream stream broke; whatever was sent on
// it is void, and a new stream is open for what follows. Token is the auth
// token the new stream carries (a lane's; "" for none).
type UpstreamLost struct {
	Upstream port.UpstreamID
	Token    string
}

// Fetched is the answer to a revision fetch.
type Fetched struct {
	ID     port.FetchID
	Result port.FetchResult
}

// Probed is the answer to a member probe.
type Probed struct {
	Member string
	Seq    uint64
	Result port.ProbeResult
}

// SetMembers replaces the etcd members the failover machine chooses from.
type SetMembers struct{ Endpoints []string }

// CacheRead is a client's cacheable read: the node answers it with a
// port.Answer for its call, from the read cache or "forward".
type CacheRead struct{ cache.Read }

// CacheFill hands the read cache etcd's response to a forwarded cacheable
// read of [Start, End) (client keyspace, as Key's request); the cache owns
// Resp from then on.
type CacheFill struct {
	Key        cache.Key
	Start, End []byte
	Resp       *pb.RangeResponse
}

// Suspect reports that the connection to the member in use dropped.
type Suspect struct{}

func (Suspect) isInput()          {}
func (CacheRead) isInput()        {}
func (CacheFill) isInput()        {}
func (KeepAlive) isInput()        {}
func (LeaseRevoked) isInput()     {}
func (LeaseChecked) isInput()     {}
func (LeasesListed) isInput()     {}
func (Probed) isInput()           {}
func (SetMembers) isInput()       {}
func (Tick) isInput()             {}
func (OpenStream) isInput()       {}
func (CloseStream) isInput()      {}
func (WatchCreate) isInput()      {}
func (WatchCancel) isInput()      {}
func (WatchProgress) isInput()    {}
func (Written) isInput()          {}
func (UpstreamResponse) isInput() {}
func (UpstreamLost) isInput()     {}
func (Fetched) isInput()          {}

func (i Tick) String() string { return "tick " + i.Now.UTC().Format(time.RFC3339Nano) }
func (i OpenStream) String() string {
	s := fmt.Sprintf("open stream %d", i.Stream)
	if i.Lease {
		s = fmt.Sprintf("open keep-alive stream %d", i.Stream)
	}
	if i.Token != "" {
		s += " with token"
	}
	if i.Identity != "" {
		s += " as " + i.Identity
	}
	if i.RequireLeader {
		s += " requiring a leader"
	}
	return s
}
func (i Probed) String() string      { return fmt.Sprintf("probe %d of %s: %v", i.Seq, i.Member, i.Result) }
func (Suspect) String() string       { return "connection to the member in use dropped" }
func (i SetMembers) String() string  { return fmt.Sprintf("members %v", i.Endpoints) }
func (i CloseStream) String() string { return fmt.Sprintf("close stream %d", i.Stream) }
func (i WatchCreate) String() string { return fmt.Sprintf("stream %d create %v", i.Stream, i.Req) }
func (i WatchCancel) String() string {
	return fmt.Sprintf("stream %d cancel %d", i.Stream, i.WatchID)
}
func (i WatchProgress) String() string { return fmt.Sprintf("stream %d progress", i.Stream) }
func (i Written) String() string       { return fmt.Sprintf("stream %d wrote %d bytes", i.Stream, i.Bytes) }
func (i UpstreamResponse) String() string {
	if i.Lease != nil {
		return fmt.Sprintf("%v responds %v", i.Upstream, i.Lease)
	}
	return fmt.Sprintf("%v responds %v", i.Upstream, i.Watch)
}
func (i KeepAlive) String() string    { return fmt.Sprintf("stream %d keep-alive %d", i.Stream, i.ID) }
func (i LeaseChecked) String() string { return fmt.Sprintf("lease %d checked: %v", i.ID, i.Result) }
func (i LeasesListed) String() string { return fmt.Sprintf("%d leases listed", len(i.IDs)) }
func (i LeaseRevoked) String() string { return fmt.Sprintf("lease %d revoked", i.ID) }
func (i UpstreamLost) String() string { return fmt.Sprintf("%v lost", i.Upstream) }
func (i CacheRead) String() string {
	kind := "serializable"
	if i.Consistent {
		kind = "consistent"
	}
	return fmt.Sprintf("call %d: %s read, floor %d", i.Call, kind, i.Floor)
}
func (i CacheFill) String() string {
	return fmt.Sprintf("cache fill [%q, %q) at revision %d", i.Start, i.End, i.Resp.GetHeader().GetRevision())
}
func (i Fetched) String() string { return fmt.Sprintf("fetch %d answered: %v", i.ID, i.Result) }
