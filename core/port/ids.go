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

// NumWatchUpstreams is the number of upstream Watch streams (the first
// UpstreamIDs).
const NumWatchUpstreams UpstreamID = 2

func (u UpstreamID) String() string {
	switch u {
	case WatchShared:
		return "watch-shared"
	case WatchCatchUp:
		return "watch-catch-up"
	case LeaseKeepAlive:
		return "lease-keep-alive"
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
