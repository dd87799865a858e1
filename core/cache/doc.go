// Package cache is the read cache machine: serializable Range responses
// kept with their revision and dropped as soon as an event touching their
// range is delivered by the watch subscription that feeds the cache.
//
// Guarantees:
//
//   - An entry is never served after an event that touches its range has
//     been delivered to the cache (Event), whatever wrote it: a write made
//     directly on etcd or through another proxy invalidates as a write
//     through this proxy does. Ranges are etcd's: a single key, [key, end),
//     open-ended ([key, "\x00")) and the whole keyspace.
//   - An entry is only filled from a response at a revision no older than
//     the last the subscription delivered: a response from a member that
//     lags the subscription would miss events already delivered, and is
//     not kept.
//   - Nothing is served while the subscription is not live (SetLive): after
//     the upstream watch stream was lost and until the subscription has
//     caught up, entries may lack invalidations still on their way. A
//     subscription that lost events (its watch was cancelled) drops every
//     entry (Reset).
//   - Entries are keyed by the whole request (so count-only, keys-only,
//     limit, sort and min/max filters get exactly etcd's answer to the same
//     request) and by the caller's identity: one identity's entry is never
//     served to another.
//   - Memory is bounded: entries larger than MaxEntryBytes are not kept,
//     and the least recently used are evicted beyond MaxBytes.
//
// The machine is deterministic and single-threaded: one loop owns it.
package cache
