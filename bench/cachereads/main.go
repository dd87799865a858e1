// Command cachereads measures the read cache, black-box: how fast hot keys
// are read, how many of those reads reach etcd, what they cost etcd and the
// proxy in CPU, and how soon a write made directly on etcd is seen through
// the target. bench/cachereads/run.sh builds it with the binaries it needs
// and runs it.
//
// It starts one etcd member (-etcd, a separate process with default flags
// plus -etcd-flags), writes -keys hot keys of -value-bytes bytes directly on
// it, and measures the targets one after another on the same etcd:
//
//   - direct: etcd itself;
//   - etcdproxy: this proxy (-etcdproxy, `etcdproxy start`, default flags
//     plus -etcdproxy-flags), with its read cache;
//   - grpc-proxy: etcd's own proxy (`etcd grpc-proxy start`, plus
//     -grpcproxy-flags), whose cache serves serializable reads and is
//     invalidated only by writes made through that proxy.
//
// Each proxy runs in its own child process, started before its target's
// workloads and killed by PID after them, so that an idle proxy (and the
// watch etcdproxy's cache holds on etcd) costs nothing while another target
// is measured. On each target, in turn (load.go, fresh.go):
//
//  1. serializable: -clients goroutines over -conns gRPC connections each
//     read a random one of the hot keys, serializable, in a tight loop, for
//     -warmup (not measured) then -duration;
//  2. linearizable: the same with linearizable reads;
//  3. write-to-fresh: a writer puts -writes new values of one key directly
//     on etcd, one every -write-interval, while one reader polls the key
//     through the target, serializable, in a tight loop; for each write, the
//     time from the Put's return until the reader first sees that value or
//     a later one (at most -fresh-timeout after the last write), and the
//     reads that returned a value older than one the reader had already
//     seen.
//
// For 1 and 2 it reports reads/s and p50/p99 latency over the measured
// window, etcd's and the proxy's CPU seconds in it (utime+stime from
// /proc/<pid>/stat), the fraction of reads that reached etcd (etcd's
// grpc_server_handled_total{grpc_method="Range"} on its /metrics, before
// and after, over the reads made) and the proxy's cache figures from its
// /proxy/metrics. The results are printed as one Markdown table, with
// ratios to direct and to grpc-proxy, and written to -out; with -json they
// are also printed as one line of JSON after the table (json.go), which
// bench/suite reads. Every child process is killed by PID at exit; the
// data and logs stay under -dir.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/bench/internal/targets"
)

type options struct {
	etcdBin, etcdproxyBin string
	etcdFlags             string
	grpcproxyFlags        string
	etcdproxyFlags        string
	targets               []string

	keys, valueBytes int
	clients, conns   int
	warmup, duration time.Duration
	writes           int
	writeInterval    time.Duration
	freshTimeout     time.Duration
	quick            bool
	jsonOut          bool
	dir, out, label  string
	timeout          time.Duration
}

var allTargets = []string{"direct", "etcdproxy", "grpc-proxy"}

var logf = child.Logf

func main() {
	var o options
	var targets string
	flag.StringVar(&o.etcdBin, "etcd", "", "etcd binary (bench/etcd): the member, and `etcd grpc-proxy start` for the grpc-proxy target")
	flag.StringVar(&o.etcdproxyBin, "etcdproxy", "", "etcdproxy binary (cmd/etcdproxy) for the etcdproxy target")
	flag.StringVar(&o.etcdFlags, "etcd-flags", "", "extra flags for the etcd member (space separated)")
	flag.StringVar(&o.grpcproxyFlags, "grpcproxy-flags", "", "extra flags for etcd grpc-proxy start (space separated)")
	flag.StringVar(&o.etcdproxyFlags, "etcdproxy-flags", "", "extra flags for etcdproxy start (space separated)")
	flag.StringVar(&targets, "targets", strings.Join(allTargets, ","), "targets, measured one after another, comma separated: "+strings.Join(allTargets, ", "))
	flag.IntVar(&o.keys, "keys", 100, "hot keys, written directly on etcd before the first target")
	flag.IntVar(&o.valueBytes, "value-bytes", 100, "bytes of each hot key's value")
	flag.IntVar(&o.clients, "clients", 64, "reading goroutines in the read workloads")
	flag.IntVar(&o.conns, "conns", 8, "gRPC connections the readers share (goroutine i uses connection i mod conns)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "load before each read workload's measured window")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured window of each read workload")
	flag.IntVar(&o.writes, "writes", 100, "writes in the write-to-fresh workload")
	flag.DurationVar(&o.writeInterval, "write-interval", 50*time.Millisecond, "time between writes in the write-to-fresh workload")
	flag.DurationVar(&o.freshTimeout, "fresh-timeout", 2*time.Second, "how long after the last write the reader may take to see it")
	flag.BoolVar(&o.quick, "quick", false, "quick preset: -duration=3s -writes=60 -warmup=500ms (flags given explicitly win)")
	flag.BoolVar(&o.jsonOut, "json", false, "after the Markdown, print the results as one line of JSON (the last line of stdout)")
	flag.StringVar(&o.dir, "dir", "", "directory for etcd's data and the logs (default: a new temporary directory)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown table to this file")
	flag.StringVar(&o.label, "label", "", "a line printed above the table (e.g. the commit measured)")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "kill every child and exit if the run takes longer")
	flag.Parse()
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			o.duration = 3 * time.Second
		}
		if !set["writes"] {
			o.writes = 60
		}
		if !set["warmup"] {
			o.warmup = 500 * time.Millisecond
		}
	}
	o.targets = strings.Split(targets, ",")
	child.Main("cachereads", o.timeout, o.check, func() error { return run(o) })
}

func (o *options) check() error {
	if err := o.bins().Check(o.targets, allTargets); err != nil {
		return err
	}
	if o.keys < 1 || o.valueBytes < 8 || o.clients < 1 || o.conns < 1 || o.writes < 1 {
		return errors.New("-keys, -clients, -conns and -writes must be positive, -value-bytes at least 8")
	}
	if o.duration <= 0 || o.warmup < 0 || o.writeInterval <= 0 || o.freshTimeout <= 0 {
		return errors.New("-duration, -write-interval and -fresh-timeout must be positive")
	}
	return nil
}

func run(o options) error {
	var err error
	if o.dir, err = child.WorkDir(o.dir, "cachereads"); err != nil {
		return err
	}
	logf("data and logs in %s", o.dir)
	began := time.Now()

	etcd, etcdURL, err := o.bins().StartEtcd("etcd", o.etcdFlags)
	if err != nil {
		return err
	}
	defer etcd.Stop()

	conn, err := probe.Dial(etcdURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	if err := writeHotKeys(kv, o.keys, o.valueBytes); err != nil {
		return err
	}
	logf("wrote %d hot keys of %d bytes on etcd", o.keys, o.valueBytes)

	var results []result
	for _, t := range o.targets {
		r, err := runTarget(o, t, etcd, etcdURL, kv)
		if err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		results = append(results, r)
	}

	var header strings.Builder
	if o.label != "" {
		header.WriteString(o.label + "\n\n")
	}
	fmt.Fprintf(&header, "One etcd member; %d hot keys of %d bytes; read workloads: %d goroutines over %d connections, %v warm-up then %v measured; "+
		"write-to-fresh: %d writes on etcd every %v, one serializable poller through the target. %d CPUs; load average at the start %s; run took %v.\n",
		o.keys, o.valueBytes, o.clients, o.conns, o.warmup, o.duration, o.writes, o.writeInterval,
		runtime.NumCPU(), results[0].load, time.Since(began).Round(time.Second))
	if o.etcdFlags != "" || o.grpcproxyFlags != "" || o.etcdproxyFlags != "" {
		fmt.Fprintf(&header, "Extra flags: etcd %q, grpc-proxy %q, etcdproxy %q.\n", o.etcdFlags, o.grpcproxyFlags, o.etcdproxyFlags)
	}
	md := markdown(header.String(), o, results)
	fmt.Print(md)
	if o.jsonOut {
		fmt.Println(jsonLine(o, results))
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return err
		}
		logf("table written to %s", o.out)
	}
	return nil
}

// runTarget starts the target's proxy (none for direct), runs the three
// workloads through it and stops it.
func runTarget(o options, name string, etcd *child.Proc, etcdURL string, kv pb.KVClient) (result, error) {
	res := result{target: name, load: loadAvg()}
	tgt := target{name: name, endpoint: etcdURL}
	if name != "direct" {
		flags := o.etcdproxyFlags
		if name == "grpc-proxy" {
			flags = o.grpcproxyFlags
		}
		p, addr, err := o.bins().StartProxy(name, etcdURL, flags)
		if err != nil {
			return res, err
		}
		defer func() {
			p.Stop()
			logf("%s: stopped pid %d", name, p.PID())
		}()
		tgt.p, tgt.endpoint = p, addr
	}
	alive := func() error {
		for _, p := range []*child.Proc{etcd, tgt.p} {
			if p != nil && p.Exited() {
				return fmt.Errorf("%s has exited; see %s", p.Name, p.Log)
			}
		}
		return nil
	}

	for _, serializable := range []bool{true, false} {
		if err := alive(); err != nil {
			return res, err
		}
		r, err := runReads(o, tgt, etcd, etcdURL, serializable)
		if err != nil {
			return res, err
		}
		logf("%s, %s: %.0f reads/s, p50 %v p99 %v, %.1f%% reached etcd, etcd CPU %.2f s, proxy CPU %.2f s, harness CPU %.2f s, %d errors, %d bad",
			name, r.kind(), r.rate(), r.p50, r.p99, 100*r.etcdFraction(), r.etcdCPU, r.proxyCPU, r.selfCPU, r.errs, r.bad)
		if serializable {
			res.ser = r
		} else {
			res.lin = r
		}
	}

	if err := alive(); err != nil {
		return res, err
	}
	f, err := runFresh(o, tgt, kv)
	if err != nil {
		return res, err
	}
	res.fresh = f
	logf("%s, write-to-fresh: %d of %d writes seen, p50 %s p99 %s max %s ms, %d monotonic violations, %.0f polls/s",
		name, f.seen(), len(f.lat), f.quantile(0.5), f.quantile(0.99), f.quantile(1), f.violations, f.pollRate())
	return res, alive()
}

// writeHotKeys puts the hot keys directly on etcd.
func writeHotKeys(kv pb.KVClient, n, size int) error {
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := kv.Put(ctx, &pb.PutRequest{Key: hotKey(i), Value: hotValue(i, size)})
		cancel()
		if err != nil {
			return fmt.Errorf("writing hot key %d: %w", i, err)
		}
	}
	return nil
}

func hotKey(i int) []byte { return fmt.Appendf(nil, "cachereads/hot/%03d", i) }

// hotValue is size bytes: the key's index, then padding.
func hotValue(i, size int) []byte {
	v := fmt.Appendf(nil, "%08d", i)
	return append(v, strings.Repeat("x", size-len(v))...)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// bins are the binaries the children run, and where they keep data and logs.
func (o options) bins() targets.Bins {
	return targets.Bins{Etcd: o.etcdBin, Etcdproxy: o.etcdproxyBin, Dir: o.dir}
}
