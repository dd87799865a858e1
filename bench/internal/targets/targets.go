// Package targets starts what a benchmark measures, each as a child process
// on free 127.0.0.1 ports: one etcd member, and a proxy in front of it
// (this proxy, `etcdproxy start`, or etcd's own, `etcd grpc-proxy start`).
// Every start waits until the process serves, and every process is a
// child.Proc, killed by PID at the benchmark's exit.
package targets

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
)

// Bins are the binaries and the directory of a benchmark's children.
type Bins struct {
	Etcd, Etcdproxy string // the etcd binary (also `grpc-proxy start`), this proxy's
	Dir             string // data directories and logs
}

// LogPath is where the child named name logs.
func (b Bins) LogPath(name string) string { return filepath.Join(b.Dir, name+".log") }

// StartEtcd starts one etcd member named name, with default flags plus
// flags, and waits until it is healthy. It returns the member and its
// client URL.
func (b Bins) StartEtcd(name, flags string) (*child.Proc, string, error) {
	clientAddr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	peerAddr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	etcdURL, peerURL := "http://"+clientAddr, "http://"+peerAddr
	args := []string{"--name=" + name, "--data-dir=" + filepath.Join(b.Dir, name+"-data"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=" + name + "=" + peerURL}
	etcd, err := child.Start(name, b.Etcd, append(args, strings.Fields(flags)...), b.LogPath(name))
	if err != nil {
		return nil, "", err
	}
	if err := probe.AwaitHealthy(etcd, etcdURL, 30*time.Second); err != nil {
		etcd.Stop()
		return nil, "", err
	}
	return etcd, etcdURL, nil
}

// StartProxy starts the proxy named name (etcdproxy or grpc-proxy) in
// front of etcdURL, with flags added, and waits until it serves. It
// returns the proxy and its host:port.
func (b Bins) StartProxy(name, etcdURL, flags string) (*child.Proc, string, error) {
	var bin string
	var args []string
	switch name {
	case "grpc-proxy":
		bin, args = b.Etcd, append([]string{"grpc-proxy", "start"}, strings.Fields(flags)...)
	case "etcdproxy":
		bin, args = b.Etcdproxy, append([]string{"start"}, strings.Fields(flags)...)
	default:
		return nil, "", fmt.Errorf("no proxy for target %q", name)
	}
	return b.StartServer(name, bin, func(addr string) []string {
		return append(args, "--endpoints="+etcdURL, "--listen-addr="+addr,
			"--advertise-client-url=", "--data-dir="+filepath.Join(b.Dir, name+".data"))
	})
}

// StartServer starts bin, logging as name, with the arguments argsAt
// makes for a free 127.0.0.1 address, and waits until it serves there as
// a proxy does (its ready line, then a Range answered). It returns the
// process and the address.
func (b Bins) StartServer(name, bin string, argsAt func(addr string) []string) (*child.Proc, string, error) {
	addr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := child.Start(name, bin, argsAt(addr), b.LogPath(name))
	if err != nil {
		return nil, "", err
	}
	if err := probe.AwaitProxy(p, addr, 30*time.Second); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

// Check reports a target in chosen that is not in known, or a binary the
// chosen targets need and b lacks: etcd always (the member), this proxy's
// for the etcdproxy target.
func (b Bins) Check(chosen, known []string) error {
	for _, t := range chosen {
		if !slices.Contains(known, t) {
			return fmt.Errorf("unknown target %q", t)
		}
	}
	if b.Etcd == "" {
		return errors.New("-etcd is required")
	}
	if slices.Contains(chosen, "etcdproxy") && b.Etcdproxy == "" {
		return errors.New("the etcdproxy target needs -etcdproxy")
	}
	return nil
}
