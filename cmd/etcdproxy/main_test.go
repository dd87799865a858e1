package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
)

var bins struct {
	dir      string
	proxy    string
	etcdctl  string
	buildErr error
}

// TestMain builds the proxy binary and etcd's own etcdctl once, so that the
// tests run them as a user would.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "etcdproxy-bin-")
	if err != nil {
		panic(err)
	}
	bins.dir = dir
	bins.proxy = filepath.Join(dir, "etcdproxy")
	bins.etcdctl = filepath.Join(dir, "etcdctl")
	for _, b := range []struct{ out, pkg string }{{bins.proxy, "."}, {bins.etcdctl, "../../bench/etcdctl"}} {
		if out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput(); err != nil {
			bins.buildErr = err
			os.Stderr.Write(out)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needBins(t *testing.T) {
	t.Helper()
	if bins.buildErr != nil {
		t.Fatalf("building binaries: %v", bins.buildErr)
	}
}

// logWatcher collects a process's zap JSON log lines.
type logWatcher struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   bytes.Buffer
}

func (w *logWatcher) consume(r *bufio.Scanner) {
	for r.Scan() {
		line := r.Text()
		w.mu.Lock()
		w.raw.WriteString(line + "\n")
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			w.lines = append(w.lines, m)
		}
		w.mu.Unlock()
	}
}

func (w *logWatcher) find(msg string) map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if l["msg"] == msg {
			return l
		}
	}
	return nil
}

func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.raw.String()
}

func etcdctl(t *testing.T, endpoint string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bins.etcdctl, append([]string{"--endpoints=" + endpoint}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("etcdctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestSeedFlowWithEtcdctl is the README's first run: the binary with an
// embedded etcd, then etcdctl put and get through the proxy.
func TestSeedFlowWithEtcdctl(t *testing.T) {
	needBins(t)
	listen := testutil.FreeAddr(t)
	cmd := exec.Command(bins.proxy, "start", "--embedded-etcd",
		"--listen-addr="+listen,
		"--embedded-client-url=http://"+testutil.FreeAddr(t),
		"--embedded-peer-url=http://"+testutil.FreeAddr(t),
		"--data-dir="+t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := &logWatcher{}
	done := make(chan struct{})
	go func() { logs.consume(bufio.NewScanner(stderr)); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	deadline := time.Now().Add(60 * time.Second)
	for logs.find("embedded etcd and proxy ready") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line after 60s; log:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ready := logs.find("started gRPC proxy")
	if ready == nil || ready["address"] != listen || ready["level"] != "info" {
		t.Fatalf("ready line %v, want msg %q with address %q", ready, "started gRPC proxy", listen)
	}

	if out := etcdctl(t, listen, "put", "foo", "bar"); out != "OK\n" {
		t.Errorf("put printed %q, want OK", out)
	}
	if out := etcdctl(t, listen, "get", "foo"); out != "foo\nbar\n" {
		t.Errorf("get printed %q, want foo and bar", out)
	}
	if out := etcdctl(t, listen, "del", "foo"); out != "1\n" {
		t.Errorf("del printed %q, want 1", out)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, logs)
	}
}

// TestStartErrors: bad flags and unusable settings stop the binary at start
// with one error naming the cause and a non-zero exit status.
func TestStartErrors(t *testing.T) {
	needBins(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	missing := filepath.Join(t.TempDir(), "missing")
	ep := "--endpoints=" + testutil.FreeAddr(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"start", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{"malformed number", []string{"start", "--max-send-bytes=lots"}, `invalid argument "lots" for "--max-send-bytes"`},
		{"malformed duration", []string{"start", "--grpc-keepalive-timeout=soon"}, `invalid argument "soon" for "--grpc-keepalive-timeout"`},
		{"unparsable endpoint", []string{"start", "--endpoints=http://[::1"}, `invalid --endpoints entry "http://[::1"`},
		{"endpoint without port", []string{"start", "--endpoints=etcd.example"}, `invalid --endpoints entry "etcd.example"`},
		{"unsupported scheme", []string{"start", "--endpoints=ftp://127.0.0.1:2379"}, `unsupported scheme "ftp"`},
		{"listen address in use", []string{"start", ep, "--listen-addr=" + busy.Addr().String()}, "address already in use"},
		{"unreadable serving certificate", []string{"start", ep, "--listen-addr=" + testutil.FreeAddr(t), "--cert-file=" + missing + ".crt", "--key-file=" + missing + ".key"}, missing + ".crt"},
		{"unreadable etcd CA", []string{"start", ep, "--listen-addr=" + testutil.FreeAddr(t), "--cacert=" + missing + ".ca"}, missing + ".ca"},
		{"discovery domain without records", []string{"start", "--discovery-srv=no-records.invalid"}, "dns lookup errors"},
		{"resolver prefix without ttl", []string{"start", "--resolver-prefix=___grpc_proxy_endpoint"}, "invalid --resolver-ttl 0"},
		{"bad tls version", []string{"start", "--tls-min-version=TLS0.9"}, "invalid --tls-min-version"},
		{"failover timeout too short", []string{"start", "--failover-timeout=10ms"}, "invalid --failover-timeout 10ms: must be at least 100ms"},
		{"stray argument", []string{"start", "extra"}, `unknown command "extra"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bins.proxy, c.args...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 || ctx.Err() != nil {
				t.Fatalf("%v: want a non-zero exit, got %v\n%s", c.args, err, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Errorf("%v: output does not name the cause %q:\n%s", c.args, c.want, out)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	needBins(t)
	out, err := exec.Command(bins.proxy, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "etcdproxy version "+Version) {
		t.Errorf("--version: %v %q", err, out)
	}
	out, err = exec.Command(bins.proxy, "start", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("start --help: %v", err)
	}
	for _, flag := range []string{"--endpoints", "--listen-addr", "--advertise-client-url", "--resolver-prefix", "--resolver-ttl",
		"--namespace", "--metrics-addr", "--cert", "--key", "--cacert", "--cert-file", "--key-file", "--trusted-ca-file",
		"--insecure-skip-tls-verify", "--auto-tls", "--max-recv-bytes", "--max-send-bytes", "--max-concurrent-streams",
		"--grpc-keepalive-min-time", "--grpc-keepalive-interval", "--grpc-keepalive-timeout", "--dial-keepalive-time",
		"--dial-keepalive-timeout", "--debug", "--enable-pprof", "--data-dir", "--embedded-etcd", "--failover-timeout"} {
		if !strings.Contains(string(out), flag+" ") {
			t.Errorf("start --help does not list %s", flag)
		}
	}
	if out, err := exec.Command(bins.proxy, "grpc-proxy", "start", "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "--endpoints") {
		t.Errorf("grpc-proxy start --help: %v", err)
	}
}
