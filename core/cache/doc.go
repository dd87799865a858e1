// Package cache is the read cache machine: Range responses kept with their
// revision and dropped as soon as an event touching their range is
// delivered by the watch subscription that feeds the cache (core/node
// opens it through the watch machine). Reads come in as Read and are
// answered through the outbox (port.Answer): a response, or "forward".
//
// Guarantees:
//
//   - An entry is never served after an event that touches its range has
//     been delivered to the cache (Event), whatever wrote it: a write made
//     directly on etcd or through another proxy invalidates as a write
//     through this proxy does. Ranges are etcd's: a single key, [key, end),
//     open-ended ([key, "\x00")) and the whole keyspace.
//   - An answer is exact: it claims the later of its entry's fill revision
//     and the revision the subscription has delivered, and the entry is
//     etcd's store at both (no event touched its range in between).
//   - An entry is only filled from a response at a revision no older than
//     the last the subscription delivered: a response from a member that
//     lags the subscription would miss events already delivered, and is
//     not kept.
//   - Nothing is served while the subscription is not live (SetLive): after
//     the upstream watch stream was lost and until the subscription has
//     caught up, entries may lack invalidations still on their way. A
//     subscription that lost events (its watch was cancelled) drops every
//     entry (Reset).
//   - A linearizable read is answered only once a revision fetch that
//     started after it has returned etcd's revision and the subscription
//     has delivered it: never stale. One fetch is in flight at a time, for
//     every read that came meanwhile; a read waits ConsistentWait at most,
//     then is forwarded.
//   - No answer goes below the caller's floor (the revision its connection
//     has been answered at).
//   - Entries are keyed by the whole request (so count-only, keys-only,
//     limit, sort and min/max filters get exactly etcd's answer to the same
//     request) and by the caller's identity: one identity's entry is never
//     served to another. Entries are served only while etcd answers the
//     fetches, which carry no credentials, at least every ConfirmInterval
//     while reads come; a refused fetch (auth enabled) drops every entry.
//   - Memory is bounded: entries larger than MaxEntryBytes are not kept,
//     and the least recently used are evicted beyond MaxBytes; after
//     IdleAfter without reads the caller drops everything (Idle, Reset).
//
// The machine is deterministic and single-threaded: one loop owns it.
package cache
