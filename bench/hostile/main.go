// Command hostile runs hostile and careless clients against a target (this
// proxy, etcd's own grpc-proxy, or etcd directly) beside a well-behaved
// canary, and measures what they cost the target and the canary.
// bench/hostile/run.sh builds it with the binaries it needs and runs it.
//
// It starts one etcd member (-etcd, a child process) and measures the
// targets one after another on it, each proxy a fresh child process:
//
//   - etcdproxy: this proxy (-etcdproxy, `etcdproxy start`, default flags
//     plus -etcdproxy-flags);
//   - grpc-proxy: etcd's own proxy (`etcd grpc-proxy start`);
//   - direct: etcd itself.
//
// Through each target a canary watches canary/ while a writer puts one key
// there directly on etcd every -canary-interval; for each write the canary
// records when its event arrived. Beside it, one phase after another, each
// -phase long (attacks.go):
//
//  1. quiet: nothing else;
//  2. 100k-watches: one client stream creates -watches watches (distinct
//     keys) as fast as it can, reading the answers, and holds them;
//  3. never-reads: -stalled watch streams each create a watch on one busy
//     key and never read, while a writer puts -busy-bytes values on it
//     directly on etcd as fast as one connection allows;
//  4. churn: goroutines open a watch stream, create a watch, read its
//     created, and drop the stream, in a loop; others do the same with a
//     keep-alive stream and a lease;
//  5. oversized-malformed: Puts above etcd's request limit and malformed
//     protobuf, in a loop;
//  6. after: nothing; the figures show what is left once the hostile
//     clients have gone.
//
// Per phase it reports what the hostile clients got, the target's peak and
// final resident memory and goroutines, etcd's, and the canary's event
// latency (p50/p99) and lost, duplicated or reordered events. The table is
// printed as Markdown and written to -out. Every child process is killed by
// PID at exit; data and logs stay under -dir.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/targets"
)

type options struct {
	etcdBin, etcdproxyBin string
	etcdproxyFlags        string
	targets               []string

	phase          time.Duration
	watches        int
	stalled        int
	busyBytes      int
	churners       int
	canaryInterval time.Duration
	quick          bool
	dir, out       string
	label          string
	timeout        time.Duration
}

var allTargets = []string{"etcdproxy", "grpc-proxy", "direct"}

var logf = child.Logf

func main() {
	var o options
	var tgts string
	flag.StringVar(&o.etcdBin, "etcd", "", "etcd binary (bench/etcd): the member, and `etcd grpc-proxy start`")
	flag.StringVar(&o.etcdproxyBin, "etcdproxy", "", "etcdproxy binary (cmd/etcdproxy)")
	flag.StringVar(&o.etcdproxyFlags, "etcdproxy-flags", "", "extra flags for etcdproxy start (space separated)")
	flag.StringVar(&tgts, "targets", strings.Join(allTargets, ","), "targets, one after another, comma separated: "+strings.Join(allTargets, ", "))
	flag.DurationVar(&o.phase, "phase", 15*time.Second, "length of each phase (the 100k-watches phase lasts until every create is answered, at most 4 phases)")
	flag.IntVar(&o.watches, "watches", 100000, "watches the 100k-watches phase creates on one stream")
	flag.IntVar(&o.stalled, "stalled", 200, "watch streams that never read in the never-reads phase")
	flag.IntVar(&o.busyBytes, "busy-bytes", 1024, "value size the busy key is written with in the never-reads phase")
	flag.IntVar(&o.churners, "churners", 4, "goroutines dropping watch streams, and as many dropping keep-alive streams, in the churn phase")
	flag.DurationVar(&o.canaryInterval, "canary-interval", 20*time.Millisecond, "time between the canary's writes")
	flag.BoolVar(&o.quick, "quick", false, "quick preset: -phase=6s (flags given explicitly win)")
	flag.StringVar(&o.dir, "dir", "", "directory for etcd's data and the logs (default: a new temporary directory)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown table to this file")
	flag.StringVar(&o.label, "label", "", "a line printed above the table (e.g. the commit measured)")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "kill every child and exit if the run takes longer")
	flag.Parse()
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["phase"] {
			o.phase = 6 * time.Second
		}
	}
	o.targets = strings.Split(tgts, ",")
	child.Main("hostile", o.timeout, o.check, func() error { return run(o) })
}

func (o *options) check() error {
	if err := o.bins().Check(o.targets, allTargets); err != nil {
		return err
	}
	if o.phase <= 0 || o.watches < 1 || o.stalled < 1 || o.churners < 1 || o.busyBytes < 1 || o.canaryInterval <= 0 {
		return errors.New("-phase, -watches, -stalled, -churners, -busy-bytes and -canary-interval must be positive")
	}
	return nil
}

func (o options) bins() targets.Bins {
	return targets.Bins{Etcd: o.etcdBin, Etcdproxy: o.etcdproxyBin, Dir: o.dir}
}

func run(o options) error {
	var err error
	if o.dir, err = child.WorkDir(o.dir, "hostile"); err != nil {
		return err
	}
	logf("data and logs in %s", o.dir)
	began := time.Now()
	etcd, etcdURL, err := o.bins().StartEtcd("etcd", "--quota-backend-bytes=8589934592 --enable-pprof")
	if err != nil {
		return err
	}
	defer etcd.Stop()

	var results []targetResult
	for _, name := range o.targets {
		r, err := runTarget(o, name, etcd, etcdURL)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		results = append(results, r)
	}
	var header strings.Builder
	if o.label != "" {
		header.WriteString(o.label + "\n\n")
	}
	fmt.Fprintf(&header, "One etcd member; phases of %v; canary writes every %v; %d watches on one stream; %d streams that never read, busy key written with %d-byte values; %d + %d churning goroutines. %d CPUs; run took %v.\n",
		o.phase, o.canaryInterval, o.watches, o.stalled, o.busyBytes, o.churners, o.churners, runtime.NumCPU(), time.Since(began).Round(time.Second))
	if o.etcdproxyFlags != "" {
		fmt.Fprintf(&header, "Extra etcdproxy flags: %q.\n", o.etcdproxyFlags)
	}
	md := markdown(header.String(), results)
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return err
		}
		logf("table written to %s", o.out)
	}
	for _, r := range results {
		if r.canaryLost > 0 || r.canaryDup > 0 {
			return fmt.Errorf("%s: the canary lost %d events and got %d twice or out of order", r.target, r.canaryLost, r.canaryDup)
		}
	}
	return nil
}
