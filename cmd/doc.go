// Package cmd holds the proxy's one binary, etcdproxy (cmd/etcdproxy). Its
// start subcommand takes the flags of `etcd grpc-proxy start` by the same
// names, meanings and defaults, so an operator can swap it in; `grpc-proxy
// start` is accepted as a synonym for scripts that call etcd's proxy that
// way. With --embedded-etcd it also runs an etcd member in-process, for a
// one-command start.
package cmd
