// Command etcdctl is etcd's own etcdctl, built from go.etcd.io/etcd/etcdctl/v3
// so that tests can drive the proxy with the real client tool.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
