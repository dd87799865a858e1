// Package keyspace translates keys and key ranges between a client's view of
// etcd and etcd's own keyspace under a namespace prefix (the proxy's
// --namespace flag).
//
// Guarantees, for a non-empty prefix p:
//
//   - Every non-empty key or range a client sends maps into [p, end(p)),
//     where end(p) is the smallest key greater than every key starting with p
//     (or the end of the keyspace when p is all 0xff bytes). No translated
//     request can read, write, compare, delete or watch a key outside p.
//   - Range semantics are kept: an empty range end means "this key only", a
//     range end of "\x00" means "every key from key on" (inside p), and
//     ordering between keys is preserved, so key < end holds after the
//     translation exactly when it held before.
//   - Empty keys are left empty so that etcd rejects them with the error it
//     gives a client talking to it directly (etcdserver: key is not provided).
//   - Keys etcd returns are stripped of p; a key equal to p itself is
//     unreachable (the client would see it as the empty key, which etcd never
//     lets a client create).
//
// The package is pure: no I/O, no goroutines, no global state.
package keyspace
