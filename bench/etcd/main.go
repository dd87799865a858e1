// Command etcd is the real etcd server binary (go.etcd.io/etcd/server/v3
// etcdmain), built from the module's pinned etcd version. It serves both
// `etcd ...` and `etcd grpc-proxy start ...`; bench/watchfanout/run.sh uses it
// to compare this proxy with direct etcd and with etcd's own grpc-proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
