package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/version"
)

// Version is the proxy's release.
const Version = "0.1.0"

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "etcdproxy",
		Short: "etcd v3 gRPC proxy",
		Long: `etcdproxy serves etcd's v3 gRPC API to any etcd client and forwards to an
etcd cluster, with the flags of 'etcd grpc-proxy start'.`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate(fmt.Sprintf("etcdproxy version %s\netcd API version %s\nGo version %s\n", Version, version.Version, runtime.Version()))
	root.AddCommand(newStartCommand())

	// `etcdproxy grpc-proxy start ...` behaves like `etcd grpc-proxy start ...`.
	alias := &cobra.Command{Use: "grpc-proxy", Short: "synonym of the start subcommand's parent, as in etcd", Hidden: true}
	alias.AddCommand(newStartCommand())
	root.AddCommand(alias)
	return root
}
