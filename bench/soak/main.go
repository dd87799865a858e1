// Command soak is a load generator that keeps this proxy busy for a long
// run under churn, with one member failure in the middle, and then checks
// every watch and every lease against etcd. bench/soak/run.sh builds it
// with the proxy and runs it. It is not a CI test.
//
// It starts a 3-member embedded etcd cluster in its own process
// (internal/embedetcd, no fsync, data under -dir) and the proxy
// (-etcdproxy) as a child process with all three members in --endpoints.
// Then, for -duration, only through the proxy, over -conns
// clientv3.Client connections:
//
//   - -watchers watchers (watch.go) open watch sessions one after another:
//     each watches one of -prefixes prefixes from an explicit start
//     revision (the newest revision the bench knows, or, for -catchup of
//     them, an older one, log-uniformly back to the run's start, to make
//     the proxy catch up), holds it -hold-min to -hold-max, then cancels
//     it. A watch that closes on its own (an error, or none) is counted as
//     a client error and watched again from the revision after the
//     session's last event. Every -progress each connection asks for a
//     progress notification (RequestProgress), so that the sessions also
//     learn revisions up to which they have everything.
//   - writers (write.go) Put new keys under the prefixes, -put-rate a
//     second in all, open loop;
//   - readers (write.go) Get written keys, -get-rate a second in all,
//     serializable and linearizable alternately;
//   - -leases leases (lease.go), granted through the proxy at the start,
//     each with a key attached, kept alive with clientv3's KeepAlive
//     through the proxy for the whole run; and, as a control group,
//     -control-leases more the same way directly against the members.
//
// At -duration/2 (fault.go) the member the proxy uses (its
// etcdproxy_upstream_member_in_use gauge) is stopped (Member.Stop), and
// restarted -down later. Every -sample (sample.go) the proxy's RSS and
// goroutines, the client's open watches, etcd's watchers and the client
// errors so far are recorded, with the CPU used and the longest stall of
// the bench's own process (stall.go), which hosts etcd.
//
// At the end (check.go) the load stops, etcd's history of the prefixes is
// read from the members directly, and every session is checked: its
// events must be exactly etcd's events on its prefix from its start
// revision up to the last revision it received (its last event, or a
// progress notification's revision if higher), in order, each once. Each
// lease must still exist on etcd with its key, and its keep-alive channel
// must not have closed; the control group is reported beside, so that a
// loss any client would have seen (the cluster stalling for longer than
// the TTL) can be told apart. The report (report.go) is printed as
// Markdown and written to -out; the exit status is 1 if an event was
// lost, duplicated, out of order, foreign or delivered after a progress
// notification that covered it, if a lease through the proxy was lost, or
// if the member could not be stopped.
//
// The proxy is killed by its PID at exit, on a signal, or after -timeout.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
)

type options struct {
	etcdproxyBin   string
	etcdproxyFlags string
	dir, out       string
	label          string

	quick    bool
	duration time.Duration
	down     time.Duration
	sample   time.Duration
	timeout  time.Duration

	conns, watchers, leases, prefixes int
	controlLeases                     int
	putRate, getRate                  float64
	holdMin, holdMax                  time.Duration
	catchup                           float64
	progress                          time.Duration
	requireLeader                     bool
	leaseTTL                          int64
	rpcTimeout                        time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.etcdproxyBin, "etcdproxy", "", "etcdproxy binary (cmd/etcdproxy)")
	flag.StringVar(&o.etcdproxyFlags, "etcdproxy-flags", "", "extra flags for etcdproxy start (space separated)")
	flag.StringVar(&o.dir, "dir", "", "directory for etcd's data and the logs (default: a new temporary directory)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	flag.StringVar(&o.label, "label", "", "a line printed at the top of the report (e.g. the proxy's commit)")
	flag.BoolVar(&o.quick, "quick", false, "a short run: -duration=90s, -down=duration/10, -sample=5s unless given")
	flag.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load runs")
	flag.DurationVar(&o.down, "down", 30*time.Second, "how long the member in use stays stopped (stopped at duration/2)")
	flag.DurationVar(&o.sample, "sample", 10*time.Second, "interval between samples")
	flag.DurationVar(&o.timeout, "timeout", 0, "kill the proxy and exit if the run takes longer (default: duration + 5m)")
	flag.IntVar(&o.conns, "conns", 50, "clientv3 clients (gRPC connections) to the proxy the load is spread over")
	flag.IntVar(&o.watchers, "watchers", 2000, "watchers, each opening one watch session after another")
	flag.IntVar(&o.leases, "leases", 1000, "leases kept alive through the proxy for the whole run")
	flag.IntVar(&o.controlLeases, "control-leases", 100, "leases kept alive directly against the members, as a control group for -leases")
	flag.IntVar(&o.prefixes, "prefixes", 10, "key prefixes written and watched (shared by the watchers)")
	flag.Float64Var(&o.putRate, "put-rate", 200, "puts a second, in all")
	flag.Float64Var(&o.getRate, "get-rate", 200, "gets a second, in all (serializable and linearizable alternately)")
	flag.DurationVar(&o.holdMin, "hold-min", time.Second, "shortest watch session")
	flag.DurationVar(&o.holdMax, "hold-max", 10*time.Second, "longest watch session")
	flag.Float64Var(&o.catchup, "catchup", 0.1, "fraction of watch sessions that start from an older revision")
	flag.DurationVar(&o.progress, "progress", time.Second, "interval between RequestProgress calls on each connection (0: none)")
	flag.BoolVar(&o.requireLeader, "require-leader", true, "watch with clientv3.WithRequireLeader, as Kubernetes does")
	flag.Int64Var(&o.leaseTTL, "lease-ttl", 10, "TTL of the leases, in seconds")
	flag.DurationVar(&o.rpcTimeout, "rpc-timeout", 5*time.Second, "deadline of each put, get and lease call")
	flag.Parse()
	o.applyQuick()
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}

	child.KillOnExit(o.timeout)

	ok, err := run(o)
	child.KillAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// applyQuick sets -quick's values for the flags not given, and the
// defaults that depend on others.
func (o *options) applyQuick() {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["duration"] {
			o.duration = 90 * time.Second
		}
		if !set["down"] {
			o.down = o.duration / 10
		}
		if !set["sample"] {
			o.sample = 5 * time.Second
		}
	}
	if o.timeout == 0 {
		o.timeout = o.duration + 5*time.Minute
	}
}

func (o *options) check() error {
	switch {
	case o.etcdproxyBin == "":
		return fmt.Errorf("-etcdproxy is required")
	case o.conns < 1 || o.watchers < 0 || o.leases < 0 || o.controlLeases < 0 || o.prefixes < 1 || o.prefixes > 100:
		return fmt.Errorf("-conns and -prefixes (at most 100) must be positive, -watchers, -leases and -control-leases not negative")
	case o.putRate <= 0 || o.getRate < 0:
		return fmt.Errorf("-put-rate must be positive and -get-rate not negative")
	case o.holdMin <= 0 || o.holdMax < o.holdMin:
		return fmt.Errorf("need 0 < -hold-min <= -hold-max")
	case o.catchup < 0 || o.catchup > 1:
		return fmt.Errorf("-catchup is a fraction")
	case o.duration <= 0 || o.sample <= 0 || o.down <= 0:
		return fmt.Errorf("-duration, -sample and -down must be positive")
	case o.down >= o.duration/2:
		return fmt.Errorf("-down (%v) must end before the load does (duration/2 = %v)", o.down, o.duration/2)
	case o.leaseTTL < 2:
		return fmt.Errorf("-lease-ttl must be at least 2 s")
	}
	return nil
}

// commandLine is how the benchmark was started, for the report.
func commandLine() string {
	return strings.Join(os.Args, " ")
}

var logf = child.Logf
