package main

import (
	"bufio"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
)

// target is where the clients send their reads: etcd itself (p nil) or a
// proxy in front of it.
type target struct {
	name, endpoint string
	p              *child.Proc
}

// startEtcd starts the etcd member on free 127.0.0.1 ports and waits until
// it is healthy.
func startEtcd(o options) (*child.Proc, string, error) {
	clientAddr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	peerAddr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	etcdURL, peerURL := "http://"+clientAddr, "http://"+peerAddr
	args := []string{"--name=cr", "--data-dir=" + filepath.Join(o.dir, "etcd-data"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=cr=" + peerURL}
	etcd, err := child.Start("etcd", o.etcdBin, append(args, strings.Fields(o.etcdFlags)...), logPath(o, "etcd"))
	if err != nil {
		return nil, "", err
	}
	if err := probe.AwaitHealthy(etcd, etcdURL, 30*time.Second); err != nil {
		etcd.Stop()
		return nil, "", err
	}
	return etcd, etcdURL, nil
}

// startProxy starts the proxy named name (etcdproxy or grpc-proxy) in front
// of etcd on a free 127.0.0.1 port and waits until it serves.
func startProxy(o options, name, etcdURL string) (*child.Proc, string, error) {
	var bin string
	var args []string
	switch name {
	case "grpc-proxy":
		bin, args = o.etcdBin, append([]string{"grpc-proxy", "start"}, strings.Fields(o.grpcproxyFlags)...)
	case "etcdproxy":
		bin, args = o.etcdproxyBin, append([]string{"start"}, strings.Fields(o.etcdproxyFlags)...)
	default:
		return nil, "", fmt.Errorf("no proxy for target %q", name)
	}
	addr, err := embedetcd.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	args = append(args, "--endpoints="+etcdURL, "--listen-addr="+addr,
		"--advertise-client-url=", "--data-dir="+filepath.Join(o.dir, name+".data"))
	p, err := child.Start(name, bin, args, logPath(o, name))
	if err != nil {
		return nil, "", err
	}
	if err := probe.AwaitProxy(p, addr, 30*time.Second); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

// sample is one line of a Prometheus text exposition.
type sample struct {
	name, labels string
	value        float64
}

// metrics is a scraped Prometheus text exposition.
type metrics []sample

// scrape reads url (a /metrics or /proxy/metrics page).
func scrape(url string) (metrics, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var m metrics
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		var s sample
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("%s: bad line %q", url, line)
			}
			s.name, s.labels, rest = line[:i], line[i+1:j], line[j+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			s.name, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("%s: bad line %q", url, line)
		}
		if s.value, err = strconv.ParseFloat(f[0], 64); err != nil {
			return nil, fmt.Errorf("%s: line %q: %w", url, line, err)
		}
		m = append(m, s)
	}
	return m, sc.Err()
}

// sum adds up the samples of name whose labels contain every one of
// labels (each written as in the exposition, e.g. `grpc_method="Range"`),
// and reports whether there was any.
func (m metrics) sum(name string, labels ...string) (float64, bool) {
	var v float64
	found := false
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(s.labels, l) {
				continue next
			}
		}
		v += s.value
		found = true
	}
	return v, found
}

// etcdRanges is etcd's count of Range calls handled.
func etcdRanges(m metrics) float64 {
	v, _ := m.sum("grpc_server_handled_total", `grpc_method="Range"`)
	return v
}
