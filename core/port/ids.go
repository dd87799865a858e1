package port

import "fmt"

// StreamID names a client stream (a Watch or a LeaseKeepAlive stream). The
// shell assigns them; they are never reused.
type StreamID uint64

// UpstreamID names one of the proxy's long-lived upstream streams to etcd.
type UpstreamID int

const (
	// WatchShared is the upstream Watch stream of the watch groups: every
	// watch on it is synced or catching up with history the group needs,
	// so etcd answers progress requests on it promptly.
	WatchShared UpstreamID = iota
	// WatchCatchUp is the upstream Watch stream of catch-up watches: a
	// single client watcher reading history its group no longer holds.
	WatchCatchUp
	// LeaseKeepAlive is the one upstream LeaseKeepAlive stream every
	// client keep-alive stream shares.
	LeaseKeepAlive
	// NumUpstreams is the number of upstream streams.
	NumUpstreams
)

// NumWatchUpstreams is the number of upstream Watch streams of one lane
// (the first UpstreamIDs are the default lane's).
const NumWatchUpstreams UpstreamID = 2

// Lane is one auth identity's pair of upstream Watch streams: its groups
// on Shared, its catch-up watches on CatchUp. The default lane (no token)
// is WatchShared and WatchCatchUp; lane i > 0 takes the two IDs after
// NumUpstreams + 2(i-1).
type Lane struct{ Shared, CatchUp UpstreamID }

// DefaultLane is the lane of streams without an auth token.
var DefaultLane = Lane{WatchShared, WatchCatchUp}

// LaneOf returns lane i's upstream IDs.
func LaneOf(i int) Lane {
	if i == 0 {
		return DefaultLane
	}
	base := NumUpstreams + UpstreamID(2*(i-1))
	return Lane{base, base + 1}
}

// Lane is LaneOf's inverse: the index of the lane whose Watch stream u is
// (0 for the default lane), and which of its streams (WatchShared or
// WatchCatchUp); false for the keep-alive stream.
func (u UpstreamID) Lane() (idx int, kind UpstreamID, ok bool) {
	switch {
	case u == WatchShared || u == WatchCatchUp:
		return 0, u, true
	case u < NumUpstreams:
		return 0, 0, false
	}
	return int(u-NumUpstreams)/2 + 1, UpstreamID(int(u-NumUpstreams) % 2), true
}

// Kind returns which of the lane's streams u is (WatchShared or
// WatchCatchUp), or false when u is not the lane's.
func (l Lane) Kind(u UpstreamID) (UpstreamID, bool) {
	switch u {
	case l.Shared:
		return WatchShared, true
	case l.CatchUp:
		return WatchCatchUp, true
	}
	return 0, false
}

// ID returns the lane's stream of kind k (WatchShared or WatchCatchUp).
func (l Lane) ID(k UpstreamID) UpstreamID {
	if k == WatchCatchUp {
		return l.CatchUp
	}
	return l.Shared
}

func (u UpstreamID) String() string {
	switch u {
	case WatchShared:
		return "watch-shared"
	case WatchCatchUp:
		return "watch-catch-up"
	case LeaseKeepAlive:
		return "lease-keep-alive"
	}
	if i, kind, ok := u.Lane(); ok {
		return fmt.Sprintf("lane-%d-%v", i, kind)
	}
	return fmt.Sprintf("upstream-%d", int(u))
}

// Machine names one of the core's machines, for tagging revision fetches.
type Machine uint8

// Machines is a set of machines.
type Machines uint8

const (
	// Watch is the watch fan-out machine.
	Watch Machine = 1 << iota
	// Cache is the read cache.
	Cache
)

// Has reports whether m is in the set.
func (s Machines) Has(m Machine) bool { return s&Machines(m) != 0 }

func (s Machines) String() string {
	var names []string
	if s.Has(Watch) {
		names = append(names, "watch")
	}
	if s.Has(Cache) {
		names = append(names, "cache")
	}
	return fmt.Sprint(names)
}
