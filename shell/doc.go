// Package shell is the proxy's network side: the gRPC servers clients talk
// to, the upstream connection to the etcd cluster, TLS, the namespace
// boundary, and the HTTP endpoints (/metrics, /health, pprof).
//
// What it guarantees to a client:
//
//   - Every etcd v3 service (KV, Watch, Lease, Cluster, Maintenance, Auth,
//     plus the v3election and v3lock services) is served, with etcd's own
//     results and etcd's own gRPC status codes and messages: errors from etcd
//     pass through untouched, and errors the proxy makes itself are the
//     rpctypes errors etcd would give.
//
//   - Auth tokens travel with each request: the proxy forwards the caller's
//     token (and its require-leader flag) on the upstream call, so etcd
//     authorizes every request as the client that sent it.
//
//   - The upstream connection uses one member at a time: the one the core's
//     failover machine (core/failover) chose. members.go runs its health
//     probes, each on a connection of its own to the member probed, and
//     carries out its switches: the connection moves to the chosen member,
//     the loop's upstream streams reopen there, and every call and stream
//     still on the member left ends with Unavailable (inflight.go; gRPC
//     would let them run on there). A dropped connection to the member in
//     use has it probed at once. A request that cannot reach any member
//     fails with Unavailable before the client's deadline rather than
//     hanging.
//
//   - Under --namespace, the keyspace boundary of core/keyspace holds for
//     every request, and calls that etcd does not scope by key cannot act on
//     the whole cluster (see namespace.go).
//
//   - Keep-alive streams without an auth token, outside a namespace, are
//     served by the core's lease machine on the same loop (lease.go); the
//     loop keeps one upstream LeaseKeepAlive stream for all of them.
//
//   - Watch streams are served by the core's node (core/node), those with
//     an auth token in a lane of their identity (identity.go learns a
//     token's user from the Authenticate calls it passes on), run on one
//     event loop (loop.go): client requests, upstream
//     responses and fetch answers reach it as data on one channel, in order;
//     it hands responses to the client streams' senders, requests to the
//     upstream streams (upstream_stream.go, which reopen a broken stream and
//     make sure nothing meant for the broken one reaches the new one) and
//     revision fetches to goroutines (fetch.go). Every timer of the loop
//     comes from the injected clock (Config.Clock).
//
//   - One client cannot grow the proxy without bound: watches per stream
//     and streams per connection are capped by flags, each refusal naming
//     its flag (limits.go, and the watch machine); a slow reader's queue is
//     bounded by --watch-stream-buffer-bytes.
//
//   - Reads are answered from the core's read cache where it is exact
//     (cache.go, floor.go); with --experimental-leasing-prefix KV goes
//     through clientv3's leasing KV instead of straight to etcd (leasing.go).
//
//   - Registration (--resolver-prefix) is etcd's grpcproxy.Register, and its
//     lease is revoked on a clean stop (register.go). The effective
//     configuration is logged once at start (startlog.go); with
//     --experimental-enable-grpc-logging every request and response is
//     logged as etcd's proxy logs them (grpclog.go).
//
//   - --endpoints are handed to clientv3 as written, in every form it dials
//     (host:port, http(s) URLs, unix and unixs sockets); /metrics reaches a
//     member's own metrics the same way.
//
// The shell holds no request state beyond what a stream needs while it is
// open: the proxy is stateless and any number of copies can run side by side.
package shell
