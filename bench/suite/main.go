// Command suite is the one benchmark command: in one invocation it
// measures this proxy, etcd's own grpc-proxy, etcd directly and a bare
// gRPC ceiling on the same machine, and prints one table with etcdproxy's
// ratios to each. bench/suite/run.sh builds it with the binaries it needs
// and runs it.
//
// It starts one etcd member (-etcd, a child process) and, for each
// section, each target in its own fresh process, one after another:
//
//   - direct: etcd itself;
//   - grpc-proxy: `etcd grpc-proxy start`, built from the etcd module in
//     go.mod (bench/etcd);
//   - etcdproxy: this proxy (-etcdproxy), default flags plus
//     -etcdproxy-flags;
//   - ceiling: the section's bare gRPC server, this binary run again with
//     -serve: for unary calls a forwarder that relays request and response
//     bytes undecoded (forwarder.go).
//
// Sections (-sections, in this order):
//
//   - unary: Put, linearizable Range and Txn in tight loops (unary.go);
//   - fanout: 1,000 and 10,000 watchers on one key, a burst of writes then
//     paced ones (fanout.go, running bench/watchfanout, -watchfanout, as a
//     child); no ceiling yet.
//
// The table is printed as Markdown and written to -out. -quick shortens
// every window so that the whole run takes under 3 minutes on 2 cores.
// Every child process is killed by PID at exit; data and logs stay under
// -dir.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/bench/internal/targets"
)

type options struct {
	etcdBin, etcdproxyBin string
	watchfanoutBin        string
	etcdproxyFlags        string
	targets, sections     []string

	warmup, duration         time.Duration
	unaryClients, unaryConns int
	fanoutWatchers           []int
	fanoutBurst, fanoutPaced int
	quick                    bool
	dir, out, label          string
	timeout                  time.Duration
}

var allSections = []string{"unary", "fanout"}

// target is where a section's clients go: etcd itself (proc nil) or a
// process in front of it.
type target struct {
	name, endpoint string
	proc           *child.Proc
}

func main() {
	serve := flag.String("serve", "", "run as a ceiling server (forwarder) on -addr, relaying to -upstream (the suite starts it so)")
	addr := flag.String("addr", "", "with -serve: the address to serve on")
	upstream := flag.String("upstream", "", "with -serve=forwarder: the etcd member to relay to")
	var o options
	var tgts, sections string
	flag.StringVar(&o.etcdBin, "etcd", "", "etcd binary (bench/etcd): the member, and `etcd grpc-proxy start`")
	flag.StringVar(&o.etcdproxyBin, "etcdproxy", "", "etcdproxy binary (cmd/etcdproxy)")
	flag.StringVar(&o.watchfanoutBin, "watchfanout", "", "watchfanout binary (bench/watchfanout), for the fanout section")
	var fanoutWatchers string
	flag.StringVar(&o.etcdproxyFlags, "etcdproxy-flags", "", "extra flags for etcdproxy start (space separated)")
	flag.StringVar(&tgts, "targets", strings.Join(allTargets, ","), "targets, comma separated: "+strings.Join(allTargets, ", "))
	flag.StringVar(&sections, "sections", strings.Join(allSections, ","), "sections, comma separated: "+strings.Join(allSections, ", "))
	flag.DurationVar(&o.warmup, "warmup", time.Second, "load before each measured window")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "each measured window")
	flag.IntVar(&o.unaryClients, "unary-clients", 64, "unary: calling goroutines")
	flag.IntVar(&o.unaryConns, "unary-conns", 8, "unary: gRPC connections they share")
	flag.StringVar(&fanoutWatchers, "fanout-watchers", "1000,10000", "fanout: watcher counts, comma separated")
	flag.IntVar(&o.fanoutBurst, "fanout-burst", 200, "fanout: puts as fast as possible")
	flag.IntVar(&o.fanoutPaced, "fanout-paced", 200, "fanout: puts at 100/s after the burst")
	flag.BoolVar(&o.quick, "quick", false, "quick preset: -warmup=500ms -duration=3s -fanout-watchers=1000 -fanout-burst=100 -fanout-paced=50 (flags given explicitly win)")
	flag.StringVar(&o.dir, "dir", "", "directory for data and logs (default: a new temporary directory)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown table to this file")
	flag.StringVar(&o.label, "label", "", "a line printed above the table (e.g. the commit measured)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "kill every child and exit if the run takes longer")
	flag.Parse()
	if *serve != "" {
		var err error
		switch *serve {
		case "forwarder":
			err = serveForwarder(*addr, *upstream)
		default:
			err = fmt.Errorf("no ceiling server %q", *serve)
		}
		fmt.Fprintln(os.Stderr, "suite:", err)
		os.Exit(1)
	}
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["warmup"] {
			o.warmup = 500 * time.Millisecond
		}
		if !set["duration"] {
			o.duration = 3 * time.Second
		}
		if !set["fanout-watchers"] {
			fanoutWatchers = "1000"
		}
		if !set["fanout-burst"] {
			o.fanoutBurst = 100
		}
		if !set["fanout-paced"] {
			o.fanoutPaced = 50
		}
	}
	for _, f := range strings.Split(fanoutWatchers, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "suite: -fanout-watchers: %q is not a positive count\n", f)
			os.Exit(2)
		}
		o.fanoutWatchers = append(o.fanoutWatchers, n)
	}
	o.targets, o.sections = strings.Split(tgts, ","), strings.Split(sections, ",")
	child.Main("suite", o.timeout, o.check, func() error { return run(o) })
}

func (o *options) check() error {
	if err := o.bins().Check(o.targets, allTargets); err != nil {
		return err
	}
	for _, s := range o.sections {
		if !slices.Contains(allSections, s) {
			return fmt.Errorf("unknown section %q", s)
		}
	}
	if slices.Contains(o.sections, "fanout") && o.watchfanoutBin == "" {
		return errors.New("the fanout section needs -watchfanout")
	}
	if o.duration <= 0 || o.warmup < 0 || o.unaryClients < 1 || o.unaryConns < 1 || o.fanoutBurst < 1 || o.fanoutPaced < 1 {
		return errors.New("-duration, -unary-clients and -unary-conns must be positive")
	}
	return nil
}

func (o options) bins() targets.Bins {
	return targets.Bins{Etcd: o.etcdBin, Etcdproxy: o.etcdproxyBin, Dir: o.dir}
}

func run(o options) error {
	var err error
	if o.dir, err = child.WorkDir(o.dir, "suite"); err != nil {
		return err
	}
	child.Logf("data and logs in %s", o.dir)
	began := time.Now()
	ctx := context.Background()
	etcd, etcdURL, err := o.bins().StartEtcd("etcd", "")
	if err != nil {
		return err
	}
	defer etcd.Stop()
	conn, err := probe.Dial(etcdURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	var res results
	for _, s := range o.sections {
		switch s {
		case "unary":
			if err := writeUnaryKeys(ctx, pb.NewKVClient(conn)); err != nil {
				return err
			}
			err = eachTarget(o, etcdURL, true, func(t target) error { return runUnary(ctx, o, &res, t, etcd) })
		case "fanout":
			// (No ceiling yet: a bare server sending pre-encoded watch
			// responses is still to come.)
			err = eachTarget(o, etcdURL, false, func(t target) error { return runFanout(o, &res, t, etcdURL, etcd) })
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	var md strings.Builder
	if o.label != "" {
		md.WriteString(o.label + "\n\n")
	}
	fmt.Fprintf(&md, "One etcd member; %v warm-up then %v measured per window; unary: %d goroutines over %d connections; fan-out: %v watchers over 100 connections, %d burst puts then %d at 100/s. %d CPUs; run took %v.\n\n",
		o.warmup, o.duration, o.unaryClients, o.unaryConns, o.fanoutWatchers, o.fanoutBurst, o.fanoutPaced, runtime.NumCPU(), time.Since(began).Round(time.Second))
	md.WriteString("↑: higher is better, ↓: lower is better. Ceiling: for unary calls, a bare gRPC forwarder relaying bytes undecoded. CPU per call is a process's utime+stime over the window divided by the calls answered; the target is etcd itself for direct.\n\n")
	md.WriteString(res.markdown())
	fmt.Print(md.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md.String()), 0o644); err != nil {
			return err
		}
		child.Logf("table written to %s", o.out)
	}
	return nil
}

// eachTarget starts each target in turn in front of etcdURL (fresh), runs
// fn on it, and stops it; the ceiling only if the section has one.
func eachTarget(o options, etcdURL string, ceiling bool, fn func(target) error) error {
	for _, name := range o.targets {
		if name == "ceiling" && !ceiling {
			continue
		}
		t := target{name: name, endpoint: etcdURL}
		var err error
		switch name {
		case "direct":
		case "ceiling":
			t.proc, t.endpoint, err = startCeiling(o, "forwarder", etcdURL)
		default:
			flags := ""
			if name == "etcdproxy" {
				flags = o.etcdproxyFlags
			}
			t.proc, t.endpoint, err = o.bins().StartProxy(name, etcdURL, flags)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		err = fn(t)
		if t.proc != nil {
			t.proc.Stop()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// startCeiling runs this binary as the ceiling server kind in front of
// etcdURL.
func startCeiling(o options, kind, etcdURL string) (*child.Proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	return o.bins().StartServer("ceiling-"+kind, self, func(addr string) []string {
		return []string{"-serve=" + kind, "-addr=" + addr, "-upstream=" + etcdURL}
	})
}
