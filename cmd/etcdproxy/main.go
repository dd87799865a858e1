// Command etcdproxy is an etcd v3 gRPC proxy: a stateless reverse proxy that
// serves etcd's gRPC API to etcd clients and forwards to an etcd cluster.
//
//	etcdproxy start --endpoints=http://10.0.0.1:2379,http://10.0.0.2:2379 --listen-addr=127.0.0.1:23790
//	etcdproxy start --embedded-etcd        # a local etcd member and the proxy, one command
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
