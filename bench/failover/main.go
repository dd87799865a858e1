// Command failover measures, black-box, what an etcd client sees when the
// etcd member it is using fails without closing anything, directly and
// through each of two proxies. bench/failover/run.sh builds it with the
// binaries it needs and runs it.
//
// For each scenario it starts a 3-member embedded etcd cluster
// (internal/embedetcd, no fsync) with a netfault.Forwarder in front of each
// member's client port, and the targets side by side, all through the
// forwarders:
//
//   - direct: clientv3 with the three forwarder endpoints;
//   - grpcproxy: etcd's own proxy (`etcd grpc-proxy start`, -etcd) as a
//     child process;
//   - etcdproxy: this proxy (`etcdproxy start`, -etcdproxy) as a child
//     process. It uses the first endpoint, member 0, until it fails over.
//
// Member 0 is always the one that fails; by default it is a follower (the
// leader is moved to member 1 first), with -faulty-leader it is the leader.
// The scenarios:
//
//   - silent: member 0's forwarder is silenced for -fault, then resumed:
//     the member is alive and in the cluster, but its clients get no bytes
//     and no close, as when its host or the network path to it dies.
//   - isolated: member 0's raft traffic is cut for -fault
//     (embedetcd.Cluster.Isolate), then healed: it keeps answering clients,
//     but has no leader and cannot commit, as when it is partitioned from
//     its peers but not from its clients.
//
// Through every target at once, after -warmup, through the fault and for
// -recovery after it: a writer Puts w/<target>/<n> every -put-interval,
// each with a -put-timeout deadline and without waiting for the previous
// ones; two watchers of w/<target>/ (plain, and with
// clientv3.WithRequireLeader), each watching again from the revision after
// its last event if its channel closes; and a reader making serializable
// Gets of the writer's newest acknowledged key, one at a time. A
// reference writer puts to member 1 directly, so that the staleness of
// reads has committed writes to be measured against even when a target's
// own writes all fail. Afterwards
// etcd's history of w/ is read from member 1 (never faulty) and every
// watch is compared with it event by event.
//
// The results are printed as a Markdown table (see the legend it carries)
// and written to -out; with -json they are also printed as one line of
// JSON after the table (json.go), which bench/suite reads. Every child
// process is killed by PID at exit; the cluster's data and every log stay
// under -dir.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/netfault"
)

type options struct {
	etcdBin, etcdproxyBin string
	grpcproxyFlags        string
	etcdproxyFlags        string
	scenarios, targets    []string
	warmup, fault         time.Duration
	recovery, drain       time.Duration
	putInterval           time.Duration
	putTimeout            time.Duration
	readInterval          time.Duration
	clientKeepalive       time.Duration
	faultyLeader          bool
	jsonOut               bool
	dir, out, label       string
	timeout               time.Duration
}

var allScenarios = []string{"silent", "isolated"}
var allTargets = []string{"direct", "grpcproxy", "etcdproxy"}

func main() {
	var o options
	var scenarios, targets string
	flag.StringVar(&o.etcdBin, "etcd", "", "etcd binary (bench/etcd), run as `etcd grpc-proxy start` for the grpcproxy target")
	flag.StringVar(&o.etcdproxyBin, "etcdproxy", "", "etcdproxy binary (cmd/etcdproxy) for the etcdproxy target")
	flag.StringVar(&o.grpcproxyFlags, "grpcproxy-flags", "", "extra flags for etcd grpc-proxy start (space separated)")
	flag.StringVar(&o.etcdproxyFlags, "etcdproxy-flags", "", "extra flags for etcdproxy start (space separated)")
	flag.StringVar(&scenarios, "scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma separated: "+strings.Join(allScenarios, ", "))
	flag.StringVar(&targets, "targets", strings.Join(allTargets, ","), "targets to measure side by side, comma separated: "+strings.Join(allTargets, ", "))
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before the fault")
	flag.DurationVar(&o.fault, "fault", 20*time.Second, "how long member 0 stays faulty")
	flag.DurationVar(&o.recovery, "recovery", 10*time.Second, "load after the fault ends")
	flag.DurationVar(&o.drain, "drain", 10*time.Second, "after the load, how long watches may take to deliver the last events")
	flag.DurationVar(&o.putInterval, "put-interval", 10*time.Millisecond, "interval between puts (each target)")
	flag.DurationVar(&o.putTimeout, "put-timeout", time.Second, "deadline of each put and each read")
	flag.DurationVar(&o.readInterval, "read-interval", 10*time.Millisecond, "least interval between serializable reads (each target)")
	flag.DurationVar(&o.clientKeepalive, "client-keepalive", 0, "gRPC keepalive time and timeout of the bench's clients (0: clientv3's default, none)")
	flag.BoolVar(&o.faultyLeader, "faulty-leader", false, "make member 0 the leader before the fault (default: a follower)")
	flag.BoolVar(&o.jsonOut, "json", false, "after the Markdown, print the results as one line of JSON (the last line of stdout)")
	flag.StringVar(&o.dir, "dir", "", "directory for the clusters' data and the logs (default: a new temporary directory)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown table to this file")
	flag.StringVar(&o.label, "label", "", "a line printed above the table (e.g. the commit measured)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "kill every child and exit if the run takes longer")
	flag.Parse()
	o.scenarios = strings.Split(scenarios, ",")
	o.targets = strings.Split(targets, ",")
	child.Main("failover", o.timeout, o.check, func() error { return run(o) })
}

func (o *options) check() error {
	for _, s := range o.scenarios {
		if !slices.Contains(allScenarios, s) {
			return fmt.Errorf("unknown scenario %q", s)
		}
	}
	for _, t := range o.targets {
		if !slices.Contains(allTargets, t) {
			return fmt.Errorf("unknown target %q", t)
		}
	}
	if slices.Contains(o.targets, "grpcproxy") && o.etcdBin == "" {
		return errors.New("the grpcproxy target needs -etcd")
	}
	if slices.Contains(o.targets, "etcdproxy") && o.etcdproxyBin == "" {
		return errors.New("the etcdproxy target needs -etcdproxy")
	}
	if o.putInterval <= 0 || o.putTimeout <= 0 || o.readInterval <= 0 || o.fault <= 0 {
		return errors.New("-put-interval, -put-timeout, -read-interval and -fault must be positive")
	}
	return nil
}

var logf = child.Logf

func run(o options) error {
	if o.dir == "" {
		d, err := os.MkdirTemp("", "failover.")
		if err != nil {
			return err
		}
		o.dir = d
	}
	logf("data and logs in %s", o.dir)
	var results []result
	for _, sc := range o.scenarios {
		rs, err := runScenario(o, sc)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc, err)
		}
		results = append(results, rs...)
	}
	role := "a follower (the leader is moved to member 1 first)"
	if o.faultyLeader {
		role = "the leader"
	}
	var header strings.Builder
	if o.label != "" {
		header.WriteString(o.label + "\n\n")
	}
	fmt.Fprintf(&header, "Member 0 of 3 faulty for %v after %v of load, then %v more load; member 0 is %s. "+
		"Per target: a put every %v (deadline %v, open loop), two watches, serializable reads (at most one per %v).\n",
		o.fault, o.warmup, o.recovery, role, o.putInterval, o.putTimeout, o.readInterval)
	if o.grpcproxyFlags != "" || o.etcdproxyFlags != "" || o.clientKeepalive > 0 {
		fmt.Fprintf(&header, "Extra flags: grpcproxy %q, etcdproxy %q; client keepalive %v.\n", o.grpcproxyFlags, o.etcdproxyFlags, o.clientKeepalive)
	}
	md := markdown(header.String(), results)
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

// probe is the load on one target.
type probe struct {
	target   string
	prefix   string
	w        *writer
	watchers [2]*watcher // plain, require-leader
	r        *reader
}

func runScenario(o options, scenario string) ([]result, error) {
	dir := filepath.Join(o.dir, scenario)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf("%s: starting a 3-member cluster", scenario)
	cl, err := embedetcd.StartCluster(dir, 3, embedetcd.Options{
		NoFsync:  true,
		LogLevel: "warn",
		Configure: func(c *embed.Config) {
			c.LogOutputs = []string{filepath.Join(dir, c.Name+".log")}
		},
	})
	if err != nil {
		return nil, err
	}
	defer cl.Stop()

	var fwds []*netfault.Forwarder
	defer func() {
		for _, f := range fwds {
			f.Close()
		}
	}()
	var eps []string
	for _, m := range cl.Members {
		f, err := netfault.Start(strings.TrimPrefix(m.ClientURL, "http://"))
		if err != nil {
			return nil, err
		}
		fwds = append(fwds, f)
		eps = append(eps, "http://"+f.Addr())
	}

	ctl, err := newClient([]string{cl.Members[1].ClientURL}, 0)
	if err != nil {
		return nil, err
	}
	defer ctl.Close()
	want := 1
	if o.faultyLeader {
		want = 0
	}
	if err := placeLeader(cl, want); err != nil {
		return nil, err
	}

	var inject, heal func()
	switch scenario {
	case "silent":
		inject, heal = fwds[0].Silence, fwds[0].Resume
	case "isolated":
		m0 := cl.Members[0]
		inject, heal = func() { cl.Isolate(m0) }, func() { cl.Heal(m0) }
	}
	faulty := false
	defer func() {
		if faulty {
			heal()
		}
	}()

	// The targets' endpoints, starting the proxies.
	endpoints := map[string][]string{}
	var started []*child.Proc
	defer func() {
		for _, p := range started {
			p.Stop()
		}
	}()
	for _, t := range o.targets {
		var bin string
		var args []string
		switch t {
		case "direct":
			endpoints[t] = eps
			continue
		case "grpcproxy":
			bin, args = o.etcdBin, append([]string{"grpc-proxy", "start"}, strings.Fields(o.grpcproxyFlags)...)
		case "etcdproxy":
			bin, args = o.etcdproxyBin, append([]string{"start"}, strings.Fields(o.etcdproxyFlags)...)
		}
		addr, err := embedetcd.FreeAddr()
		if err != nil {
			return nil, err
		}
		args = append(args, "--endpoints="+strings.Join(eps, ","), "--listen-addr="+addr,
			"--advertise-client-url=", "--data-dir="+filepath.Join(dir, t+".data"))
		p, err := child.Start(t, bin, args, filepath.Join(dir, t+".log"))
		if err != nil {
			return nil, err
		}
		started = append(started, p)
		if err := awaitReady(p, addr, 30*time.Second); err != nil {
			return nil, err
		}
		endpoints[t] = []string{addr}
	}

	// The load, one set of clients per role so that no role's stuck
	// connection holds up another's.
	clk := clock{time.Now()}
	var clients []*clientv3.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	client := func(eps []string) (*clientv3.Client, error) {
		c, err := newClient(eps, o.clientKeepalive)
		if err == nil {
			clients = append(clients, c)
		}
		return c, err
	}
	var probes []*probe
	for _, t := range o.targets {
		p := &probe{target: t, prefix: "w/" + t + "/"}
		wc, err := client(endpoints[t])
		if err != nil {
			return nil, err
		}
		p.w = &writer{cli: wc, prefix: p.prefix, clk: clk, interval: o.putInterval, timeout: o.putTimeout}
		for i, rl := range []bool{false, true} {
			c, err := client(endpoints[t])
			if err != nil {
				return nil, err
			}
			p.watchers[i] = &watcher{cli: c, prefix: p.prefix, requireLeader: rl, clk: clk, created: make(chan struct{})}
		}
		rc, err := client(endpoints[t])
		if err != nil {
			return nil, err
		}
		p.r = &reader{cli: rc, w: p.w, clk: clk, interval: o.readInterval, timeout: o.putTimeout}
		probes = append(probes, p)
	}

	watchCtx, stopWatches := context.WithCancel(context.Background())
	var watching sync.WaitGroup
	defer func() {
		stopWatches()
		watching.Wait()
	}()
	for _, p := range probes {
		for _, w := range p.watchers {
			watching.Add(1)
			go func() {
				defer watching.Done()
				w.run(watchCtx)
			}()
		}
	}
	createDeadline := time.After(30 * time.Second)
	for _, p := range probes {
		for _, w := range p.watchers {
			select {
			case <-w.created:
			case <-createDeadline:
				return nil, fmt.Errorf("%s: watch not created after 30 s", p.target)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := ctl.Get(ctx, "w/~start")
	if err != nil {
		return nil, err
	}
	startRev := resp.Header.Revision

	logf("%s: load on %s; fault in %v", scenario, strings.Join(o.targets, ", "), o.warmup)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var loading sync.WaitGroup
	defer func() {
		stopLoad()
		loading.Wait()
	}()
	// The reference writer writes to member 1 directly, never through a
	// fault, so that there are acknowledged writes to measure the staleness
	// of reads against even when a target's own writes all fail.
	rc, err := client([]string{cl.Members[1].ClientURL})
	if err != nil {
		return nil, err
	}
	ref := &writer{cli: rc, prefix: "w/~ref/", clk: clk, interval: o.putInterval, timeout: o.putTimeout}
	loading.Add(1)
	go func() {
		defer loading.Done()
		ref.run(loadCtx)
	}()
	for _, p := range probes {
		loading.Add(2)
		go func() {
			defer loading.Done()
			p.w.run(loadCtx)
		}()
		go func() {
			defer loading.Done()
			p.r.run(loadCtx)
		}()
	}
	var tl timeline
	time.Sleep(o.warmup)
	tl.fault = clk.now()
	inject()
	faulty = true
	logf("%s: member 0 faulty for %v", scenario, o.fault)
	time.Sleep(o.fault)
	heal()
	faulty = false
	tl.heal = clk.now()
	logf("%s: member 0 healed; load for %v more", scenario, o.recovery)
	time.Sleep(o.recovery)
	stopLoad()
	loading.Wait()
	tl.stop = clk.now()

	// etcd's history, from a member that was never faulty, up to a key
	// written after every put has answered.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ctl.Put(ctx, "w/~end", ""); err != nil {
		return nil, fmt.Errorf("writing the end marker: %w", err)
	}
	hist, err := history(ctx, ctl, startRev+1)
	if err != nil {
		return nil, err
	}

	logf("%s: load stopped; waiting up to %v for the watches to catch up", scenario, o.drain)
	drainUntil := time.Now().Add(o.drain)
	for _, p := range probes {
		h := prefixed(hist, p.prefix)
		if len(h) == 0 {
			continue
		}
		last := h[len(h)-1].rev
		for _, w := range p.watchers {
			for w.lastRev() < last && time.Now().Before(drainUntil) {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	tl.end = clk.now()
	stopWatches()
	watching.Wait()

	acked := ackedPuts(ref)
	for _, p := range probes {
		acked = append(acked, ackedPuts(p.w)...)
	}
	var results []result
	for _, p := range probes {
		results = append(results, analyze(scenario, p.target, p.w, p.watchers, p.r, prefixed(hist, p.prefix), acked, tl))
	}
	logf("%s: done", scenario)
	return results, nil
}

// placeLeader moves the cluster's leadership to member want, and waits
// until every member follows it.
func placeLeader(cl *embedetcd.Cluster, want int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ids, leader, err := leadership(cl)
		if err == nil && leader == ids[want] {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("member %d is not the leader after 20 s (last error %v)", want, err)
		}
		if err == nil && leader != 0 {
			from := slices.Index(ids, leader)
			if from >= 0 {
				if err := moveLeader(cl.Members[from].ClientURL, ids[want]); err != nil {
					logf("moving the leader to member %d: %v", want, err)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leadership asks every member for its id and its leader; the leader is 0
// unless all agree.
func leadership(cl *embedetcd.Cluster) (ids []uint64, leader uint64, err error) {
	for i, m := range cl.Members {
		c, err := newClient([]string{m.ClientURL}, 0)
		if err != nil {
			return nil, 0, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Status(ctx, m.ClientURL)
		cancel()
		c.Close()
		if err != nil {
			return nil, 0, err
		}
		ids = append(ids, st.Header.MemberId)
		if i == 0 {
			leader = st.Leader
		} else if st.Leader != leader {
			leader = 0
		}
	}
	return ids, leader, nil
}

func moveLeader(leaderURL string, to uint64) error {
	c, err := newClient([]string{leaderURL}, 0)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.MoveLeader(ctx, to)
	return err
}

// history is etcd's history of w/ from revision from up to the end marker.
func history(ctx context.Context, cli *clientv3.Client, from int64) ([]histEvent, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []histEvent
	for resp := range cli.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := resp.Err(); err != nil {
			return nil, fmt.Errorf("reading etcd's history: %w", err)
		}
		for _, ev := range resp.Events {
			if string(ev.Kv.Key) == "w/~end" {
				return out, nil
			}
			out = append(out, histEvent{ev.Kv.ModRevision, string(ev.Kv.Key)})
		}
	}
	return nil, fmt.Errorf("reading etcd's history: watch ended before the end marker: %w", ctx.Err())
}

func prefixed(hist []histEvent, prefix string) []histEvent {
	var out []histEvent
	for _, e := range hist {
		if strings.HasPrefix(e.key, prefix) {
			out = append(out, e)
		}
	}
	return out
}
