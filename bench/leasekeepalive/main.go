// Command leasekeepalive measures lease keep-alive coalescing, black-box:
// how many renewals reach etcd, and what clients are answered, when many
// client streams keep many leases alive directly against etcd, through
// etcd's own grpc-proxy and through this proxy. bench/leasekeepalive/run.sh
// builds it with the binaries it needs and runs it.
//
// It starts one etcd member (-etcd, a separate process with default flags
// plus -etcd-flags), etcd's grpc-proxy (`etcd grpc-proxy start`) and this
// proxy (-etcdproxy) in front of it, and measures the targets one after
// another on the same etcd:
//
//   - direct: etcd itself;
//   - grpcproxy: etcd's own proxy;
//   - etcdproxy: this proxy;
//   - ceiling: a bare gRPC server that answers every keep-alive at once
//     and refreshes nothing (ceiling.go): what gRPC alone costs for the
//     client side of the load. Only its CPU and answers mean anything; its
//     leases expire on etcd TTL after the grant.
//
// For each target it opens -streams raw LeaseKeepAlive streams over -conns
// gRPC connections to the target, grants -leases leases of -ttl seconds
// directly on etcd, puts each lease on -dup streams, and has every stream
// send a keep-alive for each of its leases every -interval (the streams'
// rounds evenly staggered over the interval) for -warmup, not measured,
// then -duration, measured. The streams' first rounds are spread evenly
// over the warm-up, so that behind a proxy the leases' refresh times are
// spread over its refresh period. For the measured window it reports:
//
//   - the renewals etcd made (etcd_debugging_lease_renewed_total on etcd's
//     /metrics, before and after) per second, and their ratio to the bound
//     1.1 × leases/(TTL/3) a coalescing proxy should stay under;
//   - the LeaseKeepAlive streams open on etcd (grpc_server_started_total
//     minus grpc_server_handled_total for LeaseKeepAlive) at the window's
//     end, and before the target's streams were opened (a proxy may hold
//     its upstream stream open while idle);
//   - client requests sent, and answers received, per second; the fraction
//     of the window's requests answered (after a drain of up to -drain for
//     late answers); answers with TTL <= 0 or > -ttl; the answer latency
//     p50/p99 (each answer is matched to the oldest unanswered request for
//     its lease on its stream);
//   - the target's CPU seconds (utime+stime from /proc/<pid>/stat), RSS at
//     the window's end and peak RSS (VmHWM, reset when the streams open),
//     and etcd's CPU seconds.
//
// Then "after clients stop": with -after=close (the default) every stream
// is closed; with -after=idle they stay open but send nothing. A sample of
// -sample leases is polled on etcd with TimeToLive every -poll, and for
// each the time from the last keep-alive sent for it is reported until
// etcd expired it (estimated from the first poll answering TTL <= 0: etcd
// truncates, so that is when less than 1 s remained) and until etcd no
// longer knew it (what clientv3's TimeToLive reports as TTL -1; etcd
// revokes at most 1,000 expired leases a second, so this trails expiry
// when many leases expire together). Before the next target, the harness
// waits until etcd lists none of the target's leases.
//
// The results are printed as a Markdown table and written to -out; with
// -json they are also printed as one line of JSON after the table
// (json.go), which bench/suite reads. Every child process is killed by
// PID at exit; the data and logs stay under -dir.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/bench/internal/targets"
	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
)

type options struct {
	etcdBin, etcdproxyBin string
	etcdFlags             string
	grpcproxyFlags        string
	etcdproxyFlags        string
	targets               []string

	leases, streams, conns, dup int
	ttl                         int
	interval, warmup, duration  time.Duration
	drain                       time.Duration
	after                       string
	sample                      int
	poll, expiryTimeout         time.Duration
	grantWorkers                int
	seed                        uint64
	quick                       bool
	jsonOut                     bool

	dir, out, label string
	timeout         time.Duration
}

var allTargets = []string{"direct", "grpcproxy", "etcdproxy", "ceiling"}

func main() {
	var o options
	var targets string
	flag.StringVar(&o.etcdBin, "etcd", "", "etcd binary (bench/etcd): the member, and `etcd grpc-proxy start` for the grpcproxy target")
	flag.StringVar(&o.etcdproxyBin, "etcdproxy", "", "etcdproxy binary (cmd/etcdproxy) for the etcdproxy target")
	flag.StringVar(&o.etcdFlags, "etcd-flags", "", "extra flags for the etcd member (space separated)")
	flag.StringVar(&o.grpcproxyFlags, "grpcproxy-flags", "", "extra flags for etcd grpc-proxy start (space separated)")
	flag.StringVar(&o.etcdproxyFlags, "etcdproxy-flags", "", "extra flags for etcdproxy start (space separated)")
	flag.StringVar(&targets, "targets", strings.Join(allTargets, ","), "targets, measured one after another, comma separated: "+strings.Join(allTargets, ", "))
	flag.IntVar(&o.leases, "leases", 10000, "leases (L), granted fresh on etcd for each target")
	flag.IntVar(&o.ttl, "ttl", 10, "lease TTL, seconds")
	flag.IntVar(&o.streams, "streams", 1000, "client LeaseKeepAlive streams (S)")
	flag.IntVar(&o.conns, "conns", 100, "client gRPC connections (C); stream i uses connection i mod C")
	flag.IntVar(&o.dup, "dup", 1, "streams each lease is kept alive on (k)")
	flag.DurationVar(&o.interval, "interval", time.Second, "each stream sends a keep-alive for each of its leases this often (R)")
	flag.DurationVar(&o.warmup, "warmup", 5*time.Second, "load before the measured window")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "measured window (D)")
	flag.DurationVar(&o.drain, "drain", 10*time.Second, "after the window, how long to wait for answers to its last requests")
	flag.StringVar(&o.after, "after", "close", "after the window: close every stream (close), or keep them open and silent (idle)")
	flag.IntVar(&o.sample, "sample", 100, "leases polled for expiry after the clients stop")
	flag.DurationVar(&o.poll, "poll", 100*time.Millisecond, "TimeToLive poll interval after the clients stop")
	flag.DurationVar(&o.expiryTimeout, "expiry-timeout", 0, "how long to poll for expiry (0: 4×TTL + 20 s)")
	flag.IntVar(&o.grantWorkers, "grant-workers", 64, "LeaseGrant requests in flight while granting")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the expiry sample")
	flag.BoolVar(&o.quick, "quick", false, "quick preset: -leases=1000 -streams=100 -duration=10s (flags given explicitly win)")
	flag.BoolVar(&o.jsonOut, "json", false, "after the Markdown, print the results as one line of JSON (the last line of stdout)")
	flag.StringVar(&o.dir, "dir", "", "directory for etcd's data and the logs (default: a new temporary directory)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown table to this file")
	flag.StringVar(&o.label, "label", "", "a line printed above the table (e.g. the commit measured)")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "kill every child and exit if the run takes longer")
	serve := flag.String("serve-ceiling", "", "run as the ceiling target's server on this address (the harness starts it so)")
	flag.Parse()
	if *serve != "" {
		if err := serveCeiling(*serve, int64(o.ttl)); err != nil {
			fmt.Fprintln(os.Stderr, "leasekeepalive:", err)
			os.Exit(1)
		}
		return
	}
	if o.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["leases"] {
			o.leases = 1000
		}
		if !set["streams"] {
			o.streams = 100
		}
		if !set["duration"] {
			o.duration = 10 * time.Second
		}
	}
	o.targets = strings.Split(targets, ",")
	child.Main("leasekeepalive", o.timeout, o.check, func() error {
		if o.conns > o.streams {
			o.conns = o.streams
		}
		if o.expiryTimeout == 0 {
			o.expiryTimeout = 4*time.Duration(o.ttl)*time.Second + 20*time.Second
		}
		return run(o)
	})
}

func (o *options) check() error {
	if err := (targets.Bins{Etcd: o.etcdBin, Etcdproxy: o.etcdproxyBin}).Check(o.targets, allTargets); err != nil {
		return err
	}
	if o.leases < 1 || o.streams < 1 || o.conns < 1 || o.dup < 1 || o.ttl < 1 || o.sample < 0 || o.grantWorkers < 1 {
		return errors.New("-leases, -streams, -conns, -dup, -ttl and -grant-workers must be positive")
	}
	if o.dup > o.streams {
		return errors.New("-dup cannot exceed -streams")
	}
	if o.interval <= 0 || o.duration <= 0 || o.warmup < 0 || o.poll <= 0 || o.drain < 0 {
		return errors.New("-interval, -duration and -poll must be positive")
	}
	if o.after != "close" && o.after != "idle" {
		return errors.New("-after must be close or idle")
	}
	return nil
}

var logf = child.Logf

func run(o options) error {
	var err error
	if o.dir, err = child.WorkDir(o.dir, "leasekeepalive"); err != nil {
		return err
	}
	logf("data and logs in %s", o.dir)
	began := time.Now()

	// etcd, then the proxies in front of it.
	clientAddr, err := embedetcd.FreeAddr()
	if err != nil {
		return err
	}
	peerAddr, err := embedetcd.FreeAddr()
	if err != nil {
		return err
	}
	etcdURL, peerURL := "http://"+clientAddr, "http://"+peerAddr
	args := []string{"--name=lk", "--data-dir=" + filepath.Join(o.dir, "etcd-data"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=lk=" + peerURL}
	etcd, err := child.Start("etcd", o.etcdBin, append(args, strings.Fields(o.etcdFlags)...), filepath.Join(o.dir, "etcd.log"))
	if err != nil {
		return err
	}
	defer etcd.Stop()
	if err := probe.AwaitHealthy(etcd, etcdURL, 30*time.Second); err != nil {
		return err
	}
	type target struct {
		name, endpoint string
		p              *child.Proc
	}
	var tgts []target
	for _, t := range o.targets {
		var bin string
		var args []string
		switch t {
		case "direct":
			tgts = append(tgts, target{t, etcdURL, etcd})
			continue
		case "grpcproxy":
			bin, args = o.etcdBin, append([]string{"grpc-proxy", "start"}, strings.Fields(o.grpcproxyFlags)...)
		case "etcdproxy":
			bin, args = o.etcdproxyBin, append([]string{"start"}, strings.Fields(o.etcdproxyFlags)...)
		}
		addr, err := embedetcd.FreeAddr()
		if err != nil {
			return err
		}
		if t == "ceiling" {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			bin, args = self, []string{"-serve-ceiling=" + addr, fmt.Sprintf("-ttl=%d", o.ttl)}
		} else {
			args = append(args, "--endpoints="+etcdURL, "--listen-addr="+addr,
				"--advertise-client-url=", "--data-dir="+filepath.Join(o.dir, t+".data"))
		}
		p, err := child.Start(t, bin, args, filepath.Join(o.dir, t+".log"))
		if err != nil {
			return err
		}
		defer p.Stop()
		if err := probe.AwaitProxy(p, addr, 30*time.Second); err != nil {
			return err
		}
		tgts = append(tgts, target{t, addr, p})
	}

	conn, err := probe.Dial(etcdURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	lc := pb.NewLeaseClient(conn)

	var results []result
	for i, t := range tgts {
		for _, p := range []*child.Proc{etcd, t.p} {
			if p.Exited() {
				return fmt.Errorf("%s has exited; see %s", p.Name, p.Log)
			}
		}
		rng := rand.New(rand.NewPCG(o.seed, uint64(i)))
		r, err := runTarget(o, t.name, t.endpoint, t.p, etcd, etcdURL, lc, rng)
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		results = append(results, r)
	}

	var header strings.Builder
	if o.label != "" {
		header.WriteString(o.label + "\n\n")
	}
	fmt.Fprintf(&header, "%d leases (TTL %d s) × %d on %d client streams over %d connections, a keep-alive per lease per stream every %v: "+
		"%v warm-up, %v measured; then streams %s. Bound 1.1 × L/(TTL/3) = %.0f renewals/s. %d CPUs; run took %v.\n",
		o.leases, o.ttl, o.dup, o.streams, o.conns, o.interval, o.warmup, o.duration, afterWord(o.after),
		bound(o), runtime.NumCPU(), time.Since(began).Round(time.Second))
	if o.etcdFlags != "" || o.grpcproxyFlags != "" || o.etcdproxyFlags != "" {
		fmt.Fprintf(&header, "Extra flags: etcd %q, grpcproxy %q, etcdproxy %q.\n", o.etcdFlags, o.grpcproxyFlags, o.etcdproxyFlags)
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

func afterWord(a string) string {
	if a == "idle" {
		return "kept open but silent"
	}
	return "closed"
}

// bound is 1.1 × L/(TTL/3): the renewals per second a proxy refreshing
// each lease at most once per third of its TTL stays under.
func bound(o options) float64 { return 1.1 * float64(o.leases) / (float64(o.ttl) / 3) }

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

// runTarget measures one target on fresh leases.
func runTarget(o options, name, endpoint string, tp, etcd *child.Proc, etcdURL string, lc pb.LeaseClient, rng *rand.Rand) (result, error) {
	res := result{target: name, load: loadAvg()}
	before, err := scrape(etcdURL)
	if err != nil {
		return res, err
	}
	res.streamsBefore = before.kaOpen()

	logf("%s: opening %d streams over %d connections", name, o.streams, o.conns)
	l, err := openLoad(endpoint, o.leases, o.streams, o.conns, o.dup, int64(o.ttl))
	if err != nil {
		return res, err
	}
	closed := false
	defer func() {
		if !closed {
			l.close()
		}
	}()
	_ = child.ResetPeak(tp.PID())

	g0 := time.Now()
	ids, err := grant(lc, o.leases, int64(o.ttl), o.grantWorkers)
	if err != nil {
		return res, err
	}
	res.grant = time.Since(g0)
	logf("%s: granted %d leases in %v; %v warm-up, %v measured", name, o.leases, res.grant.Round(time.Millisecond), o.warmup, o.duration)

	// The streams' first rounds are spread over the warm-up (or over one
	// interval if the warm-up is shorter), so every stream is at its pace
	// when the window opens.
	l.start(ids, o.interval, o.warmup, o.duration, max(o.interval, o.warmup))
	w0, w1 := l.window()
	sleepUntil(w0)
	m0, err := scrape(etcdURL)
	if err != nil {
		return res, err
	}
	c0, _ := child.CPUSeconds(tp.PID())
	e0, _ := child.CPUSeconds(etcd.PID())
	s0, _ := child.CPUSeconds(os.Getpid())
	sleepUntil(w1)
	m1, err := scrape(etcdURL)
	if err != nil {
		return res, err
	}
	c1, _ := child.CPUSeconds(tp.PID())
	e1, _ := child.CPUSeconds(etcd.PID())
	s1, _ := child.CPUSeconds(os.Getpid())
	res.rssKB, res.hwmKB, _ = child.Memory(tp.PID())
	window := time.Duration(w1 - w0).Seconds()
	res.window = window
	res.renewed = (m1.renewed - m0.renewed) / window
	res.streamsDuring = m1.kaOpen()
	res.streamsStart = m0.kaOpen()
	res.targetCPU, res.etcdCPU, res.selfCPU = c1-c0, e1-e0, s1-s0

	res.drained = l.drain(o.drain)
	res.planned = int64(float64(o.leases*o.dup) * window / o.interval.Seconds())
	res.sent, res.answered, res.recv = l.winSent.Load(), l.winAnswered.Load(), l.winRecv.Load()
	res.winBadTTL, res.badTTL, res.extra = l.winBadTTL.Load(), l.badTTL.Load(), l.extra.Load()
	res.lateRounds, res.rounds = l.lateRounds.Load(), l.rounds.Load()
	res.streamErrs = l.sendErrs.Load() + l.recvErrs.Load()
	if lat := l.latencies(); len(lat) > 0 {
		res.p50 = time.Duration(lat[(len(lat)-1)/2])
		res.p99 = time.Duration(lat[(len(lat)-1)*99/100])
	}
	res.examples = slices.Clone(l.examples)
	logf("%s: renewals %.0f/s, streams on etcd %.0f, answered %d/%d, p50 %v p99 %v, drained %v",
		name, res.renewed, res.streamsDuring, res.answered, res.sent, res.p50, res.p99, res.drained.Round(time.Millisecond))

	// After the clients stop.
	lastKA := l.lastKeepAlive()
	if o.after == "close" {
		l.close()
		closed = true
	}
	res.stopGap = time.Duration(now() - lastKA)
	sample := rng.Perm(o.leases)[:min(o.sample, o.leases)]
	logf("%s: streams %s; polling %d leases for expiry (up to %v)", name, afterWord(o.after), len(sample), o.expiryTimeout)
	res.expiry, res.pollErrs = l.pollExpiry(lc, sample, o.poll, o.expiryTimeout)
	if !closed {
		l.close()
		closed = true
	}
	gone := time.Duration(o.ttl)*3*time.Second + time.Duration(o.leases/500)*time.Second + 30*time.Second
	res.leftover, err = awaitGone(lc, ids, gone)
	if err != nil {
		return res, err
	}
	if res.leftover > 0 {
		logf("%s: %d leases still on etcd %v after the streams stopped; revoked them", name, res.leftover, gone)
	}
	return res, nil
}
