// Package watch is the proxy's watch fan-out: a pure state machine that
// merges client watchers on the same key range into one upstream etcd
// watcher and hands every client exactly the stream a direct etcd watch
// would give it.
//
// The machine is one of the machines of the composite node (package node),
// which feeds it inputs (client requests, upstream responses, answers to
// revision fetches, a stream drained, clock ticks) and collects what it
// writes to the node's Outbox (package port): responses for client streams,
// requests for its lane's two upstream watch streams (the shared one for
// groups, the catch-up one for catch-up watches), and revision fetches (a
// linearizable Range with the client's token).
//
// Credentials. The node runs one machine per auth identity (a lane;
// streams without a token share the default lane): the etcd user of the
// stream's token when the shell knows it (etcd issued the token through
// the proxy), the token itself otherwise. Watchers are merged only with
// watchers of the same identity, and the lane's upstream streams are
// opened with a token of it (the first stream's). Every create is first
// read with the watcher's own token on the watch's range, which is etcd's
// own check of that token for that watch. On a lane with a token etcd
// checks again whenever the proxy creates an upstream watch, so a create
// that needs one not open yet (a new group, or a catch-up watch of its
// own) is answered only once etcd has accepted it, and etcd's refusal is
// the create's refusal (await.go): a client is never told created for a
// watch that a revoke a moment later then ends. Such a lane never rewinds
// a group (a watcher from an older revision gets a catch-up watch), since
// re-creating the group would have etcd check all its watchers again.
// etcd checks a created watcher again only when its upstream watch must be
// created anew: after a broken upstream stream or a failover (what a
// direct client re-creating its watches gets), after etcd ended the
// group's watch by compaction, or when its stream was held for being slow
// and must catch up past its group's window. A refusal then ends the
// watchers of that upstream watch with etcd's reason; etcd answers it
// without a watch ID, and creates are answered in order on a stream, so it
// belongs to the oldest create not answered there. When etcd refuses the
// token itself on such a re-create (expired, lost in a member restart, or
// older than an auth change), the node ends the client streams carrying
// that token with Unavailable (clientv3 then opens its stream again with a
// fresh token and resumes its watches from their next revision, as after a
// member failure: nothing is lost or repeated), and the lane goes on under
// the token of another of its streams, on upstream streams opened again
// with it, where the watches are created again from where they stood. A
// group never stops for one client's token while another stream of the
// identity remains. A progress request is answered whatever the token,
// as etcd answers it: when the client's token may no longer read the
// revision, the machine asks etcd for progress on the upstream streams of
// the stream's watches and answers at the revision etcd gives (a stream
// with no watch is then told nothing, as etcd tells it nothing).
//
// The machine never blocks, starts no goroutine, does no I/O and reads no
// clock: time arrives with Tick. The same inputs in the same order give the
// same outputs.
//
// The machine is laid out by idea: creation and the stream's request order
// (create.go), creates that wait for etcd to accept their upstream watch
// (await.go), groups and their history window (group.go), catch-up watches
// (catchup.go), what groups and catch-up watches share about an upstream
// watch (upwatch.go), joining, leaving, ending and resuming (membership.go),
// delivery (deliver.go) and progress (progress.go).
//
// Guarantees to each client watcher, as etcd documents them:
//
//   - A stream's requests take effect in the order they came, as etcd
//     handles them one after another: creates are answered in order, a
//     cancel behind a create waits for it, and watch IDs are taken and freed
//     exactly when etcd would (an automatic ID is the lowest free one from a
//     counter that only moves forward; a create refused by etcd consumes
//     none; a watch etcd ended by compaction keeps its ID until the client
//     cancels it, and that cancel is confirmed as etcd confirms it).
//   - created carries the store revision at creation: each create is
//     answered only after a fresh linearizable read of the revision (which
//     also checks the client's permission on the range, with its token), and
//     a watch without a start revision receives every event after that
//     revision and none before. A start revision that etcd has compacted, or
//     that lies in the future, is read again as the latest.
//   - Events are ordered, unique and without gaps from the start revision
//     on; all events of one revision arrive in one response (or one fragment
//     sequence, for watchers that asked for fragments, and only for them).
//   - No response for a watch carries a header revision below one the
//     watcher has already been told (created, events, progress, its stream's
//     progress answers); a cancel response carries one no smaller than any
//     event delivered on the watch, and nothing follows it for that watch ID.
//   - A start revision older than etcd's compaction gets etcd's own
//     compaction response, relayed from an upstream watch. etcd compacts a
//     watch only if it needs a revision below the compaction revision; so
//     does the machine. It cancels the compacted upstream watch, which etcd
//     otherwise keeps on the stream (and answers no progress request there).
//   - RequestProgress is answered at a revision R only once every event up
//     to R has been delivered to every watcher on the stream, and R is at
//     least the store revision when the request arrived. Unlike etcd, which
//     drops a request that comes while a watcher is behind, the proxy
//     answers every request on a stream with watchers as soon as its
//     answer is true. Like etcd, it says nothing to a stream without
//     watchers (none created and not ended, no create waiting its turn).
//   - Progress notifications for watchers that asked for them come at
//     etcd's cadence (the cluster's --watch-progress-notify-interval): the
//     notifications etcd sends on an upstream watch go to its watchers that
//     have every event up to them. Config.ProgressInterval sets the proxy's
//     own cadence instead.
//
// Coalescing: all watchers on one exact key range share one upstream watch
// (a group) on the shared upstream stream. A watcher whose next revision
// lies within the group's history window (a bounded record of the group's
// most recent events) joins it and is replayed the window from its next
// revision. A watcher that asked for an older start revision (not
// compacted) rewinds the group: the group's upstream watch is reopened from
// that revision and the events older than the window are collected in
// front of it, so any number of such watchers cost one upstream watch. A
// watcher that falls behind the window for any other reason (a slow
// stream, a fetch answered late) gets a catch-up watch (an upstream watch of
// its own) on the second upstream stream, and moves into the group once the
// window reaches back to it. etcd answers a stream's progress request only
// when every watch on it is synced, so a catching-up watch on the shared
// stream would delay progress answers for the groups; the machine asks
// again every RetryInterval until one comes. An upstream progress answer
// speaks for a watch only if its request went out after etcd confirmed the
// watch (etcd sends created responses and progress answers on different
// internal channels, so their order on the stream proves nothing). A group
// for watchers that start after the latest revision seen has its upstream
// watch start exactly there, so that etcd counts it as synced and sends
// its events at once; etcd answers no progress request on its stream, and
// sends it no progress notification, until a write reaches that revision,
// so until then the watch is pulled back one revision (reopened there)
// before a progress request goes out on the shared stream, and a group
// with a watcher that wants progress notifications starts one revision
// back, or is pulled back when such a watcher joins (see future.go). A
// catch-up watch never starts past the latest revision seen.
// A watcher's next revision moves with what its group or catch-up watch
// learns (events, progress), so a watcher that has been told it is current
// survives a compaction at the revision after it, as a direct etcd watcher
// does.
//
// Slow clients: the node bounds the bytes queued for each client stream. A
// stream over its bound stops receiving; its watchers keep their place
// (their next revision) and resume from the group's window, or from a
// catch-up watch, once the stream has drained. Nothing is dropped; only a
// watcher whose place etcd has compacted away is ended, with etcd's
// compaction response.
//
// The simulation in package sim checks these guarantees against a model of
// etcd under generated schedules, and proves with planted faults
// (fault_sim.go, built only with the simfaults tag) that its checks fail
// when a guarantee breaks.
package watch
