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
//     bytes undecoded (forwarder.go); for watches one upstream watch per
//     distinct create request, each upstream response encoded once for
//     every watcher (watchceiling.go).
//
// Sections (-sections; each in its own file, registered by its init, run
// in sectionOrder):
//
//   - unary: Put, linearizable Range and Txn in tight loops (unary.go);
//   - reads: hot serializable and linearizable reads, and how soon a write
//     made on etcd is read through the target (reads.go, running
//     bench/cachereads, -cachereads, as a child);
//   - fanout: 1,000 and 10,000 watchers on one key and on 100 keys, a
//     burst of writes then paced ones (fanout.go, running bench/watchfanout,
//     -watchfanout, as a child);
//   - history: 1,000 watchers joining at past revisions spread over 1,000
//     writes of a key, caught up to the head (history.go);
//   - idle: RSS per connection, per idle watcher and per lease kept alive,
//     10,000 of each (idle.go);
//   - lease: keep-alives of 10,000 leases, and what reaches etcd (lease.go,
//     running bench/leasekeepalive, -leasekeepalive, as a child);
//   - failover: outages of puts, reads and watches when a member of a
//     3-member cluster goes silent or is isolated (failover.go, running
//     bench/failover, -failover, as a child);
//   - tree: 100,000 watchers on one key through one proxy, then through a
//     root proxy and 4 leaf proxies in front of it, of etcdproxy and of
//     etcd's grpc-proxy (tree.go, running bench/watchfanout).
//
// reads, lease and failover run their bench once for every target, with
// -json (childbench.go); -<section>-flags passes flags to it, and -quick
// gives each short ones.
//
// A section either measures each target the suite starts for it (each)
// or measures all of them itself (once), e.g. by running another bench
// of bench/ as a child and taking its figures.
//
// The table is printed as Markdown and written to -out. -quick shortens
// every window so that the whole run takes under 3 minutes on 2 cores.
// Every child process is killed by PID at exit; data and logs stay under
// -dir.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/bench/internal/targets"
)

// options are the suite's common flags; each section keeps its own flags
// in its own file (see section).
type options struct {
	etcdBin, etcdproxyBin string
	etcdproxyFlags        string
	targets, sections     []string

	warmup, duration time.Duration
	quick            bool
	dir, out, label  string
	timeout          time.Duration
}

// A section is one part of the suite, in its own file, registered by
// that file's init. Either each is set (the suite starts every target
// fresh in front of the member, and the section's ceiling server if it
// has one, and calls each with it) or once is (the section measures
// every target itself, typically by running another bench as a child).
type section struct {
	name string
	// ceiling is the -serve kind of the section's bare gRPC server, ""
	// if it has none.
	ceiling string
	// flags defines the section's own flags; quick holds the values -quick
	// gives them (and the common ones) unless they are set explicitly.
	flags func(fs *flag.FlagSet)
	quick map[string]string
	// check validates the flags (optional).
	check func(o options) error
	// prepare runs once before the first target, given a connection to
	// the member (optional).
	prepare func(ctx context.Context, o options, etcd *grpc.ClientConn) error
	each    func(ctx context.Context, o options, res *results, t target, m member) error
	once    func(ctx context.Context, o options, res *results) error
	// about is the section's line in the table's preamble (optional).
	about func(o options) string
}

// member is the etcd member every section's target stands in front of.
type member struct {
	proc *child.Proc
	url  string // http://host:port
}

// sections are every registered section, in the order they run:
// sectionOrder's, then any other in file order.
var sections []*section

var sectionOrder = []string{"unary", "reads", "fanout", "history", "idle", "lease", "failover", "tree"}

func register(s *section) {
	sections = append(sections, s)
	rank := func(s *section) int {
		if i := slices.Index(sectionOrder, s.name); i >= 0 {
			return i
		}
		return len(sectionOrder)
	}
	slices.SortStableFunc(sections, func(a, b *section) int { return rank(a) - rank(b) })
}

func sectionNames() []string {
	var names []string
	for _, s := range sections {
		names = append(names, s.name)
	}
	return names
}

// ceilings are the bare servers this binary can run with -serve, by kind:
// each serves on addr in front of the member at upstream until killed.
var ceilings = map[string]func(addr, upstream string) error{}

// target is where a section's clients go: etcd itself (proc nil) or a
// process in front of it.
type target struct {
	name, endpoint string
	proc           *child.Proc
}

// cpuProc is the process whose CPU the target costs: etcd's for direct.
func (t target) cpuProc(m member) *child.Proc {
	if t.proc == nil {
		return m.proc
	}
	return t.proc
}

func main() {
	serve := flag.String("serve", "", "run as a ceiling server of this kind on -addr, in front of -upstream (the suite starts it so)")
	addr := flag.String("addr", "", "with -serve: the address to serve on")
	upstream := flag.String("upstream", "", "with -serve: the etcd member behind it")
	var o options
	var tgts, sects string
	flag.StringVar(&o.etcdBin, "etcd", "", "etcd binary (bench/etcd): the member, and etcd's grpc-proxy (its grpc-proxy start command)")
	flag.StringVar(&o.etcdproxyBin, "etcdproxy", "", "etcdproxy binary (cmd/etcdproxy)")
	flag.StringVar(&o.etcdproxyFlags, "etcdproxy-flags", "", "extra flags for etcdproxy start (space separated)")
	flag.StringVar(&tgts, "targets", strings.Join(allTargets, ","), "targets, comma separated: "+strings.Join(allTargets, ", "))
	flag.StringVar(&sects, "sections", strings.Join(sectionNames(), ","), "sections, comma separated: "+strings.Join(sectionNames(), ", "))
	flag.DurationVar(&o.warmup, "warmup", time.Second, "load before each measured window")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "each measured window")
	flag.BoolVar(&o.quick, "quick", false, "quick preset, under 3 minutes on 2 cores: -warmup=500ms -duration=3s and each section's own (see doc); flags given explicitly win")
	flag.StringVar(&o.dir, "dir", "", "directory for data and logs (default: a new temporary directory)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown table to this file")
	flag.StringVar(&o.label, "label", "", "a line printed above the table (e.g. the commit measured)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "kill every child and exit if the run takes longer")
	for _, s := range sections {
		if s.flags != nil {
			s.flags(flag.CommandLine)
		}
	}
	flag.Parse()
	if *serve != "" {
		err := fmt.Errorf("no ceiling server %q", *serve)
		if fn := ceilings[*serve]; fn != nil {
			err = fn(*addr, *upstream)
		}
		fmt.Fprintln(os.Stderr, "suite:", err)
		os.Exit(1)
	}
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		presets := map[string]string{"warmup": "500ms", "duration": "3s"}
		for _, s := range sections {
			for k, v := range s.quick {
				presets[k] = v
			}
		}
		for k, v := range presets {
			if !set[k] {
				if err := flag.Set(k, v); err != nil {
					fmt.Fprintf(os.Stderr, "suite: quick preset -%s=%s: %v\n", k, v, err)
					os.Exit(2)
				}
			}
		}
	}
	o.targets, o.sections = strings.Split(tgts, ","), strings.Split(sects, ",")
	child.Main("suite", o.timeout, o.check, func() error { return run(o) })
}

func (o *options) check() error {
	if err := o.bins().Check(o.targets, allTargets); err != nil {
		return err
	}
	if o.duration <= 0 || o.warmup < 0 {
		return fmt.Errorf("-duration must be positive and -warmup not negative")
	}
	for _, name := range o.sections {
		s := o.section(name)
		if s == nil {
			return fmt.Errorf("unknown section %q", name)
		}
		if s.check != nil {
			if err := s.check(*o); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return nil
}

func (o options) section(name string) *section {
	for _, s := range sections {
		if s.name == name {
			return s
		}
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
	proc, etcdURL, err := o.bins().StartEtcd("etcd", "")
	if err != nil {
		return err
	}
	defer proc.Stop()
	m := member{proc: proc, url: etcdURL}
	conn, err := probe.Dial(etcdURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	var res results
	var about []string
	for _, name := range o.sections {
		s := o.section(name)
		sectionBegan := time.Now()
		if s.prepare != nil {
			err = s.prepare(ctx, o, conn)
		}
		if err == nil && s.each != nil {
			err = eachTarget(o, m, s.ceiling, func(t target) error { return s.each(ctx, o, &res, t, m) })
		}
		if err == nil && s.once != nil {
			err = s.once(ctx, o, &res)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		child.Logf("section %s took %v", name, time.Since(sectionBegan).Round(time.Second))
		if s.about != nil {
			about = append(about, "- "+name+": "+s.about(o))
		}
	}
	var md strings.Builder
	if o.label != "" {
		md.WriteString(o.label + "\n\n")
	}
	fmt.Fprintf(&md, "One etcd member; %d CPUs; %v warm-up then %v measured per window; run took %v.\n\n",
		runtime.NumCPU(), o.warmup, o.duration, time.Since(began).Round(time.Second))
	if len(about) > 0 {
		md.WriteString(strings.Join(about, "\n") + "\n\n")
	}
	md.WriteString("↑: higher is better, ↓: lower is better. Ceiling: the section's bare gRPC server with no proxy logic (see each section). CPU is a process's utime+stime over the window; the target is etcd itself for direct.\n\n")
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

// eachTarget starts each target in turn in front of the member (fresh),
// runs fn on it, and stops it; the ceiling target is the section's
// ceiling server kind, skipped if it has none.
func eachTarget(o options, m member, ceiling string, fn func(target) error) error {
	for _, name := range o.targets {
		if name == "ceiling" && ceiling == "" {
			continue
		}
		t := target{name: name, endpoint: m.url}
		var err error
		switch name {
		case "direct":
		case "ceiling":
			t.proc, t.endpoint, err = startCeiling(o, ceiling, m.url)
		default:
			flags := ""
			if name == "etcdproxy" {
				flags = o.etcdproxyFlags
			}
			t.proc, t.endpoint, err = o.bins().StartProxy(name, m.url, flags)
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
