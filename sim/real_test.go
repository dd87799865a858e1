package sim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"pgregory.net/rapid"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// TestRealEtcdSchedules is level 2 of the simulation: the whole proxy,
// in-process (shell.Start), in front of an embedded 3-member etcd cluster,
// driven by rapid-generated schedules.
//
// A schedule is plain data drawn before anything runs, so a seed replays
// the same schedule whatever the timing. Its steps: batches of 1-3
// concurrent KV operations through the proxy (put, delete, linearizable get
// of one key or of every key, a put-if-absent-else-delete transaction, a
// transaction writing two keys or every key at one revision), bursts of
// 4-20 writes, watches (a key, a range, the rest of the keyspace or all of
// it; next, current, past or future start revision; prev_kv; NOPUT or
// NODELETE), more watches on the range of an earlier one from the past (so
// that they share its group, from its history window or by a rewind),
// cancels, compactions (directly on etcd), and at most once a stop of the
// member the proxy forwards to, with a few operations repeated through the
// proxy every 50ms until the stop returns, and its restart a few steps later
// (or at the end).
//
// Every watch is made twice with the same request, including an explicit
// start revision taken from a Get: through the proxy, and directly on a
// member the proxy does not use (never stopped), on raw etcdserverpb Watch
// streams, so that no client library hides a duplicate, a gap or a broken
// stream. Before a cancel, a compaction and at the end, a barrier brings
// every stream with live watches up to a fresh revision T: a write outside
// the schedule's keys, then progress requests (etcd answers one only when
// every watch of the stream is synced, so any answer at T or later comes
// after all events up to T; the proxy answers each request, in order, once
// every event up to its answer is delivered). Checked:
//
//   - every proxy watch received exactly its direct twin's events (type,
//     key, value, mod revision, prev_kv) up to T, or up to the barrier
//     before its cancel (after which both may stop at different points, one
//     a prefix of the other), and the same ending: refusal, compaction
//     response at the same revision, or cancel response; one exception is
//     tolerated and logged, see realSame;
//   - a watch whose start revision is compacted gets the compaction
//     response on both sides; a created response carries a revision between
//     the ones read before the request and after the answer;
//   - on each stream: no response for an unknown or ended watch, no
//     revision split across responses or repeated, no event going back;
//   - every KV operation through the proxy, with its call and return time
//     and result, is linearizable (porcupine, one register per key holding
//     value and mod revision; a write that failed may or may not have taken
//     effect, so it is pending: return time infinity, any result; a failed
//     read constrains nothing and is left out);
//   - once the schedule's streams are closed, the proxy's watch machine
//     holds nothing (CoreState gauges) and etcd has no watcher left
//     (etcd_debugging_mvcc_watcher_total of the in-process members).
//
// The cluster and the proxy are started once per test; each schedule works
// under a key prefix of its own, and the stopped member is restarted
// whatever happens. The proxy runs with shell.DefaultConfig() except for a
// history window of 4 events and a 600-byte stream buffer, so that short
// schedules reach rewinds, upstream watches of a watcher's own and held
// streams too; the machine's counters over all schedules are logged.
//
// The number of schedules is SIM_REAL_CHECKS (default realChecksDefault,
// under a minute on 2 cores), not -rapid.checks, which sizes the core
// simulation. A failure prints every problem found, the schedule as it ran
// (each operation's result, each watch's IDs and revisions) and the seed;
// replay that schedule first with
//
//	go test ./sim -run 'TestRealEtcdSchedules$' -v -rapid.seed=<seed>
//
// adding SIM_REAL_CHECKS=1 to run it alone and -rapid.shrinktime=0s to skip
// minimisation (each shrink step replays a whole schedule against etcd).
// The schedule replays exactly; the timing does not, so a race may need a
// few runs to show again. SIM_TRACE=1 logs each step as it runs. The watch
// machine's mutants are caught here too:
//
//	go test -tags simfaults -c -o /tmp/sim.test ./sim
//	SIM_MUTANT=skip-event SIM_REAL_CHECKS=10 /tmp/sim.test -test.run 'TestRealEtcdSchedules$' -rapid.nofailfile
func TestRealEtcdSchedules(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member etcd cluster")
	}
	checks := realChecksDefault
	if v, err := strconv.Atoi(os.Getenv("SIM_REAL_CHECKS")); err == nil && v > 0 {
		checks = v
	}
	f := flag.Lookup("rapid.checks")
	old := f.Value.String()
	if err := f.Value.Set(strconv.Itoa(checks)); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Value.Set(old) }()

	e := startRealEnv(t)
	rapid.Check(t, e.schedule)
	stats, _ := e.p.CoreState()
	t.Logf("the proxy's core over every schedule: %+v", stats)
}

// TestRealKVModelCatchesStaleRead shows the linearizability check can fail:
// a read that returns a value after a later write completed is illegal, and
// a failed write may be applied late.
func TestRealKVModelCatchesStaleRead(t *testing.T) {
	op := func(client int, in realKVIn, out realKVOut, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	put := func(v string) realKVIn { return realKVIn{Op: "put", Key: "a", Value: v} }
	stale := []porcupine.Operation{
		op(0, put("1"), realKVOut{Rev: 2}, 0, 10),
		op(0, put("2"), realKVOut{Rev: 3}, 20, 30),
		op(1, realKVIn{Op: "get", Key: "a"}, realKVOut{Exists: true, Value: "1", Rev: 2}, 40, 50),
	}
	if res := porcupine.CheckOperations(realKVModel, stale); res {
		t.Fatal("a stale read passed as linearizable")
	}
	late := []porcupine.Operation{
		op(0, put("1"), realKVOut{Unknown: true}, 0, math.MaxInt64),
		op(1, realKVIn{Op: "get", Key: "a"}, realKVOut{}, 10, 20),
		op(1, realKVIn{Op: "get", Key: "a"}, realKVOut{Exists: true, Value: "1", Rev: 2}, 30, 40),
	}
	if res := porcupine.CheckOperations(realKVModel, late); !res {
		t.Fatal("a failed write applied late was refused")
	}
	rev := []porcupine.Operation{
		op(0, put("1"), realKVOut{Rev: 5}, 0, 10),
		op(0, put("2"), realKVOut{Rev: 4}, 20, 30),
	}
	if res := porcupine.CheckOperations(realKVModel, rev); res {
		t.Fatal("a write at a lower revision than the one before it passed")
	}
}

const (
	realChecksDefault = 4
	// realOpTimeout bounds each KV operation through the proxy; the proxy
	// moves to another member within 2s (shell.TestFailover).
	realOpTimeout = 3 * time.Second
	// realWait bounds every wait for a condition (a created response, a
	// barrier, a compaction reaching every member...).
	realWait = 30 * time.Second
	// realLeakWait bounds the wait for the proxy and etcd to drop every
	// watch once the schedule's streams are closed.
	realLeakWait = 10 * time.Second
	// realScheduleTimeout bounds one whole schedule.
	realScheduleTimeout = 4 * time.Minute
)

var realKeys = []string{"a", "b", "c", "d", "e"}

// ---- the schedule, as plain data ----

type realOpKind int

const (
	realPut realOpKind = iota
	realDelete
	realGet
	realGetAll
	realCAS    // put if absent, else delete
	realMulti  // one transaction writing Key and Key2
	realPutAll // one transaction writing every key
)

var realOpNames = []string{"put", "delete", "get", "get-all", "put-if-absent-else-delete", "put-two", "put-all"}

type realOp struct {
	Kind      realOpKind
	Key, Key2 int
}

func (o realOp) String() string {
	switch o.Kind {
	case realGetAll, realPutAll:
		return realOpNames[o.Kind]
	case realMulti:
		return fmt.Sprintf("put-two(%s,%s)", realKeys[o.Key], realKeys[o.Key2])
	}
	return fmt.Sprintf("%s(%s)", realOpNames[o.Kind], realKeys[o.Key])
}

type realStepKind int

const (
	realStepBatch realStepKind = iota
	realStepWatch
	realStepCancel
	realStepCompact
	realStepStop
	realStepRestart
	realStepBurst
	realStepRewatch
)

type realWatchSpec struct {
	Stream int // which of the two stream pairs
	Range  int // 0, 1: one key; 2: [b, d); 3: [c, end of prefix); 4: the whole prefix
	Key    int
	Start  int   // 0: next revision; 1: past revision of the schedule; 2: current revision; 3: future
	Back   int   // which past revision
	Ahead  int64 // how far in the future
	PrevKV bool
	Filter int // 0: NOPUT, 1: NODELETE, else none
}

type realStep struct {
	Kind  realStepKind
	Ops   []realOp // batch, and the operations in flight during a stop
	Watch realWatchSpec
	Pick  int // cancel: which live watch; compact: which past revision; burst: how many times
}

func (s realStep) String() string {
	switch s.Kind {
	case realStepBatch:
		return fmt.Sprintf("batch %v", s.Ops)
	case realStepWatch:
		w := s.Watch
		start := []string{"next", fmt.Sprintf("past#%d", w.Back), "current", fmt.Sprintf("current+%d", w.Ahead)}[w.Start]
		f := ""
		switch w.Filter {
		case 0:
			f = " noput"
		case 1:
			f = " nodelete"
		}
		return fmt.Sprintf("watch stream %d %s from %s prev_kv=%v%s", w.Stream, realRangeName(w), start, w.PrevKV, f)
	case realStepCancel:
		return fmt.Sprintf("cancel live watch #%d", s.Pick)
	case realStepCompact:
		return fmt.Sprintf("compact at past revision #%d", s.Pick)
	case realStepStop:
		return fmt.Sprintf("stop the proxy's member, repeating %v until it has stopped", s.Ops)
	case realStepBurst:
		return fmt.Sprintf("burst of %d %v", s.Pick, s.Ops[0])
	case realStepRewatch:
		w := s.Watch
		return fmt.Sprintf("watch stream %d the range of watch #%d from past#%d prev_kv=%v", w.Stream, s.Pick, w.Back, w.PrevKV)
	default:
		return "restart the stopped member"
	}
}

func realRangeName(w realWatchSpec) string {
	switch w.Range {
	case 0, 1:
		return realKeys[w.Key]
	case 2:
		return "[b,d)"
	case 3:
		return "[c,end)"
	default:
		return "[all)"
	}
}

func drawRealOps(t *rapid.T) []realOp {
	n := rapid.IntRange(1, 3).Draw(t, "ops")
	ops := make([]realOp, n)
	for i := range ops {
		var o realOp
		switch k := rapid.IntRange(0, 10).Draw(t, "op"); {
		case k < 4:
			o.Kind = realPut
		case k < 5:
			o.Kind = realDelete
		case k < 7:
			o.Kind = realGet
		case k < 8:
			o.Kind = realGetAll
		case k < 9:
			o.Kind = realCAS
		case k < 10:
			o.Kind = realMulti
		default:
			o.Kind = realPutAll
		}
		o.Key = rapid.IntRange(0, len(realKeys)-1).Draw(t, "key")
		o.Key2 = (o.Key + 1 + rapid.IntRange(0, len(realKeys)-2).Draw(t, "second key")) % len(realKeys)
		ops[i] = o
	}
	return ops
}

func drawRealStep(t *rapid.T) realStep {
	switch k := rapid.IntRange(0, 12).Draw(t, "step"); {
	case k < 4:
		return realStep{Kind: realStepBatch, Ops: drawRealOps(t)}
	case k < 6:
		op := realOp{Kind: []realOpKind{realPut, realPut, realMulti, realPutAll}[rapid.IntRange(0, 3).Draw(t, "burst op")],
			Key: rapid.IntRange(0, len(realKeys)-1).Draw(t, "key")}
		op.Key2 = (op.Key + 1 + rapid.IntRange(0, len(realKeys)-2).Draw(t, "second key")) % len(realKeys)
		return realStep{Kind: realStepBurst, Ops: []realOp{op}, Pick: rapid.IntRange(4, 20).Draw(t, "burst length")}
	case k < 10:
		return realStep{Kind: realStepWatch, Watch: realWatchSpec{
			Stream: rapid.IntRange(0, 1).Draw(t, "stream"),
			Range:  rapid.IntRange(0, 4).Draw(t, "range"),
			Key:    rapid.IntRange(0, len(realKeys)-1).Draw(t, "watch key"),
			Start:  rapid.IntRange(0, 3).Draw(t, "start"),
			Back:   rapid.IntRange(0, 15).Draw(t, "back"),
			Ahead:  int64(rapid.IntRange(1, 3).Draw(t, "ahead")),
			PrevKV: rapid.Bool().Draw(t, "prev_kv"),
			Filter: rapid.IntRange(0, 9).Draw(t, "filter"),
		}}
	case k < 11:
		// Another watch on the range of an earlier one, from the past: it
		// joins that watch's group, from its window or by a rewind, or gets
		// an upstream watch of its own.
		return realStep{Kind: realStepRewatch, Pick: rapid.IntRange(0, 7).Draw(t, "which watch"), Watch: realWatchSpec{
			Stream: rapid.IntRange(0, 1).Draw(t, "stream"),
			Start:  1,
			Back:   rapid.IntRange(0, 15).Draw(t, "back"),
			PrevKV: rapid.Bool().Draw(t, "prev_kv"),
			Filter: 9,
		}}
	case k < 12:
		return realStep{Kind: realStepCancel, Pick: rapid.IntRange(0, 7).Draw(t, "which watch")}
	default:
		return realStep{Kind: realStepCompact, Pick: rapid.IntRange(0, 15).Draw(t, "which revision")}
	}
}

// drawRealSchedule draws the steps, and at most one stop of the proxy's
// member with its restart a few steps later (the end restarts it too).
func drawRealSchedule(t *rapid.T) []realStep {
	steps := rapid.SliceOfN(rapid.Custom(drawRealStep), 6, 18).Draw(t, "steps")
	if !rapid.Bool().Draw(t, "stop the proxy's member") {
		return steps
	}
	at := rapid.IntRange(0, len(steps)).Draw(t, "stop before step")
	back := rapid.IntRange(1, 6).Draw(t, "restart after steps")
	stop := realStep{Kind: realStepStop, Ops: drawRealOps(t)}
	rest := steps[at:]
	r := min(back, len(rest))
	out := make([]realStep, 0, len(steps)+2)
	out = append(out, steps[:at]...)
	out = append(out, stop)
	out = append(out, rest[:r]...)
	out = append(out, realStep{Kind: realStepRestart})
	return append(out, rest[r:]...)
}

// ---- the cluster and the proxy, shared by every schedule of a test ----

type realEnv struct {
	t         *testing.T
	cl        *embedetcd.Cluster
	p         *shell.Proxy
	proxyCC   *grpc.ClientConn
	memberCC  []*grpc.ClientConn
	compacted int64 // the highest revision compacted so far
	runs      int
	// broken is set when a schedule could not give the cluster back whole.
	broken error
}

func startRealEnv(t *testing.T) *realEnv {
	cl, err := embedetcd.StartCluster(t.TempDir(), 3, embedetcd.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	p := testutil.StartProxyLogging(t, cl.Endpoints(), func(c *shell.Config) {
		c.WatchHistoryEvents = 4
		c.WatchStreamBufferBytes = 600
		c.CacheIdleAfter = time.Second // the leak check waits for the cache's watch to close
	}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("proxy"))
	e := &realEnv{t: t, cl: cl, p: p}
	e.proxyCC = testutil.Dial(t, p.Addr())
	for _, m := range cl.Members {
		e.memberCC = append(e.memberCC, testutil.Dial(t, m.ClientURL))
	}
	return e
}

// member returns the index of the member at host:port addr, or -1.
func (e *realEnv) member(addr string) int {
	if addr == "" {
		return -1
	}
	for i, m := range e.cl.Members {
		if strings.HasSuffix(m.ClientURL, "//"+addr) {
			return i
		}
	}
	return -1
}

// schedule runs one rapid-drawn schedule.
func (e *realEnv) schedule(t *rapid.T) {
	steps := drawRealSchedule(t)
	if e.broken != nil {
		t.Fatalf("the cluster is unusable since an earlier schedule: %v", e.broken)
	}
	e.runs++
	ctx, cancel := context.WithTimeout(context.Background(), realScheduleTimeout)
	s := &realRun{e: e, t: t, ctx: ctx, cancel: cancel, prefix: fmt.Sprintf("s%d/", e.runs), stopped: -1, victim: -1, hist: newRealHistory()}
	defer s.close()
	s.open()
	var plan strings.Builder
	for i, st := range steps {
		fmt.Fprintf(&plan, "  %2d %v\n", i, st)
	}
	t.Logf("schedule under %q, direct watches on %s:\n%s", s.prefix, e.cl.Members[s.direct].Name, plan.String())
	start := time.Now()
	for i, st := range steps {
		s.tracef("step %d: %v", i, st)
		s.step(i, st)
	}
	s.finish()
	stopped := "no member stopped"
	if s.victim >= 0 {
		stopped = "stopped and restarted " + e.cl.Members[s.victim].Name
	}
	e.t.Logf("schedule %q: %d steps, %d KV operations (%d failed), %d watch pairs, %s; %v",
		s.prefix, len(steps), s.hist.calls, s.hist.failed, len(s.pairs), stopped, time.Since(start).Round(time.Millisecond))
}

// ---- one schedule's run ----

type realRun struct {
	e        *realEnv
	t        *rapid.T
	ctx      context.Context
	cancel   context.CancelFunc
	prefix   string
	direct   int // the member the direct watches use
	proxy    [2]*realStream
	directs  [2]*realStream
	pairs    []*realPair
	observed []int64 // revisions seen at the start and after each batch
	hist     *realHistory
	stopped  int // member stopped now, or -1
	victim   int // member stopped during the schedule, or -1
	trace    []string
	fills    int
	problems []string // found on the way, reported at the end
}

// realPair is one watch made through the proxy and directly.
type realPair struct {
	n       int
	spec    realWatchSpec
	req     string
	start   int64
	p, d    *realWatch
	horizon int64 // barrier revision before its cancel; 0 if not cancelled
	// compactedAt is the compaction revision when the watches were made.
	compactedAt int64
}

// open picks the member for direct watches (one the proxy does not use)
// and opens the streams.
func (s *realRun) open() {
	e := s.e
	// The proxy picks its member on its first request.
	s.retry("a first read through the proxy", func(ctx context.Context) error {
		_, err := pb.NewKVClient(e.proxyCC).Range(ctx, &pb.RangeRequest{Key: []byte("fill/")})
		return err
	})
	inUse := e.member(e.p.UpstreamMember())
	if inUse < 0 {
		s.fatalf("the proxy forwards to %q, no member of %v", e.p.UpstreamMember(), e.cl.Endpoints())
	}
	s.direct = (inUse + 1) % len(e.cl.Members)
	for i := range s.proxy {
		s.proxy[i] = s.openStream(e.proxyCC, fmt.Sprintf("proxy stream %d", i))
		s.directs[i] = s.openStream(e.memberCC[s.direct], fmt.Sprintf("direct stream %d", i))
	}
	s.observed = []int64{s.rev() + 1}
}

func (s *realRun) tracef(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	s.trace = append(s.trace, line)
	if os.Getenv("SIM_TRACE") != "" {
		s.e.t.Logf("%s %s", s.prefix, line)
	}
}

func (s *realRun) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s\n\nschedule %q as it ran:\n  %s", fmt.Sprintf(format, args...), s.prefix, strings.Join(s.trace, "\n  "))
}

// close ends the schedule's streams and gives the cluster back whole.
func (s *realRun) close() {
	for i := range s.proxy {
		for _, st := range []*realStream{s.proxy[i], s.directs[i]} {
			if st != nil {
				st.close()
			}
		}
	}
	if s.stopped >= 0 {
		if err := s.e.cl.Members[s.stopped].Restart(); err != nil {
			s.e.broken = fmt.Errorf("restarting %s: %w", s.e.cl.Members[s.stopped].Name, err)
		}
		s.stopped = -1
	}
	s.cancel()
}

func (s *realRun) directKV() pb.KVClient { return pb.NewKVClient(s.e.memberCC[s.direct]) }

// retry runs f, each try with a short deadline, until it succeeds or
// realWait has passed.
func (s *realRun) retry(what string, f func(ctx context.Context) error) {
	s.t.Helper()
	deadline := time.Now().Add(realWait)
	for {
		ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
		err := f(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || s.ctx.Err() != nil {
			s.fatalf("%s: still failing after %v: %v", what, realWait, err)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-s.ctx.Done():
		}
	}
}

// rev is the cluster's revision now (a linearizable read on the direct
// member).
func (s *realRun) rev() int64 {
	var rev int64
	s.retry("reading the revision", func(ctx context.Context) error {
		r, err := s.directKV().Range(ctx, &pb.RangeRequest{Key: []byte("fill/"), Limit: 1})
		if err == nil {
			rev = r.Header.Revision
		}
		return err
	})
	return rev
}

// fill writes outside every schedule's keys, directly, and returns the
// revision written.
func (s *realRun) fill() int64 {
	var rev int64
	s.fills++
	s.retry("writing a filler", func(ctx context.Context) error {
		r, err := s.directKV().Put(ctx, &pb.PutRequest{Key: []byte("fill/x"), Value: []byte(s.prefix + strconv.Itoa(s.fills))})
		if err == nil {
			rev = r.Header.Revision
		}
		return err
	})
	return rev
}

func (s *realRun) step(i int, st realStep) {
	switch st.Kind {
	case realStepBatch:
		s.batch(i, st.Ops)
		s.observed = append(s.observed, s.rev())
	case realStepBurst:
		s.burst(i, st.Ops[0], st.Pick)
		s.observed = append(s.observed, s.rev())
	case realStepWatch:
		s.watch(st.Watch)
	case realStepRewatch:
		if len(s.pairs) == 0 {
			s.tracef("    no watch yet")
			return
		}
		from := s.livePairs()
		if len(from) == 0 {
			from = s.pairs
		}
		spec := st.Watch
		of := from[st.Pick%len(from)].spec
		spec.Range, spec.Key = of.Range, of.Key
		s.watch(spec)
	case realStepCancel:
		s.cancelWatch(st.Pick)
	case realStepCompact:
		s.compact(st.Pick)
	case realStepStop:
		s.stop(i, st.Ops)
		s.observed = append(s.observed, s.rev())
	case realStepRestart:
		s.restart()
	}
}

// ---- KV operations through the proxy ----

func (s *realRun) key(i int) string { return s.prefix + realKeys[i] }

// batch runs ops concurrently through the proxy, each with a deadline.
func (s *realRun) batch(step int, ops []realOp) {
	res := make([]string, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], _ = s.kvOp(i, fmt.Sprintf("%d.%d", step, i), op)
		}()
	}
	wg.Wait()
	for _, r := range res {
		s.tracef("    %s", r)
	}
}

// burst runs op n times in a row through the proxy.
func (s *realRun) burst(step int, op realOp, n int) {
	failed := 0
	var last string
	for i := 0; i < n; i++ {
		desc, err := s.kvOp(0, fmt.Sprintf("%d.%d", step, i), op)
		if err != nil {
			failed++
		}
		last = desc
	}
	s.tracef("    %d times, %d failed; last: %s", n, failed, last)
}

// loop runs each of ops over and over, one slot each, every 50ms, until
// done is closed (or realWait has passed): operations in flight at every
// moment of a member stop.
func (s *realRun) loop(step int, ops []realOp, done <-chan struct{}) {
	deadline := time.Now().Add(realWait)
	res := make([]string, len(ops))
	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n, failed int
			var last string
			for ; time.Now().Before(deadline); n++ {
				desc, err := s.kvOp(i, fmt.Sprintf("%d.%d.%d", step, i, n), op)
				if err != nil {
					failed++
					last = desc
				}
				select {
				case <-done:
					res[i] = fmt.Sprintf("%v: %d times, %d failed; last failure: %s", op, n+1, failed, last)
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
			res[i] = fmt.Sprintf("%v: %d times, %d failed, still running after %v; last failure: %s", op, n, failed, realWait, last)
		}()
	}
	wg.Wait()
	for _, r := range res {
		s.tracef("    %s", r)
	}
}

// kvOp runs op through the proxy, writing value v, records it, and
// describes what happened.
func (s *realRun) kvOp(slot int, v string, op realOp) (string, error) {
	kv := pb.NewKVClient(s.e.proxyCC)
	ctx, cancel := context.WithTimeout(s.ctx, realOpTimeout)
	defer cancel()
	h := s.hist
	k := s.key(op.Key)
	call := h.now()
	var err error
	var desc string
	switch op.Kind {
	case realPut:
		var r *pb.PutResponse
		if r, err = kv.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte(v)}); err == nil {
			h.add(slot, realKVIn{Op: "put", Key: k, Value: v}, realKVOut{Rev: r.Header.Revision}, call)
			desc = fmt.Sprintf("put %s=%s @%d", realKeys[op.Key], v, r.Header.Revision)
		} else {
			h.addFailed(slot, realKVIn{Op: "put", Key: k, Value: v}, call, err)
		}
	case realDelete:
		var r *pb.DeleteRangeResponse
		if r, err = kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte(k)}); err == nil {
			h.add(slot, realKVIn{Op: "delete", Key: k}, realKVOut{Rev: r.Header.Revision, Deleted: r.Deleted}, call)
			desc = fmt.Sprintf("delete %s: %d deleted @%d", realKeys[op.Key], r.Deleted, r.Header.Revision)
		} else {
			h.addFailed(slot, realKVIn{Op: "delete", Key: k}, call, err)
		}
	case realGet:
		var r *pb.RangeResponse
		if r, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte(k)}); err == nil {
			out := realKVOut{}
			if len(r.Kvs) > 0 {
				out = realKVOut{Exists: true, Value: string(r.Kvs[0].Value), Rev: r.Kvs[0].ModRevision}
			}
			h.add(slot, realKVIn{Op: "get", Key: k}, out, call)
			desc = fmt.Sprintf("get %s: %s (at %d)", realKeys[op.Key], out.describe(), r.Header.Revision)
		} else {
			h.addFailed(slot, realKVIn{Op: "get", Key: k}, call, err)
		}
	case realGetAll:
		var r *pb.RangeResponse
		if r, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte(s.prefix), RangeEnd: []byte(realPrefixEnd(s.prefix))}); err == nil {
			var got []string
			for _, name := range realKeys {
				out := realKVOut{}
				for _, kv := range r.Kvs {
					if string(kv.Key) == s.prefix+name {
						out = realKVOut{Exists: true, Value: string(kv.Value), Rev: kv.ModRevision}
					}
				}
				h.add(slot, realKVIn{Op: "get", Key: s.prefix + name}, out, call)
				got = append(got, name+":"+out.describe())
			}
			desc = fmt.Sprintf("get-all: %s (at %d)", strings.Join(got, " "), r.Header.Revision)
		} else {
			for _, name := range realKeys {
				h.addFailed(slot, realKVIn{Op: "get", Key: s.prefix + name}, call, err)
			}
		}
	case realCAS:
		var r *pb.TxnResponse
		req := &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte(k), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k)}}}},
		}
		if r, err = kv.Txn(ctx, req); err == nil {
			h.add(slot, realKVIn{Op: "cas", Key: k, Value: v}, realKVOut{Rev: r.Header.Revision, Succeeded: r.Succeeded}, call)
			desc = fmt.Sprintf("put-if-absent-else-delete %s=%s: put=%v @%d", realKeys[op.Key], v, r.Succeeded, r.Header.Revision)
		} else {
			h.addFailed(slot, realKVIn{Op: "cas", Key: k, Value: v}, call, err)
		}
	case realMulti:
		var r *pb.TxnResponse
		k2 := s.key(op.Key2)
		req := &pb.TxnRequest{Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v + "a")}}},
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k2), Value: []byte(v + "b")}}},
		}}
		// One transaction on two registers: each key's history sees a put
		// over the same interval (a projection of an atomic operation).
		if r, err = kv.Txn(ctx, req); err == nil {
			h.add(slot, realKVIn{Op: "put", Key: k, Value: v + "a"}, realKVOut{Rev: r.Header.Revision}, call)
			h.add(slot, realKVIn{Op: "put", Key: k2, Value: v + "b"}, realKVOut{Rev: r.Header.Revision}, call)
			desc = fmt.Sprintf("put-two %s=%sa %s=%sb @%d", realKeys[op.Key], v, realKeys[op.Key2], v, r.Header.Revision)
		} else {
			h.addFailed(slot, realKVIn{Op: "put", Key: k, Value: v + "a"}, call, err)
			h.addFailed(slot, realKVIn{Op: "put", Key: k2, Value: v + "b"}, call, err)
		}
	case realPutAll:
		var r *pb.TxnResponse
		req := &pb.TxnRequest{}
		for _, name := range realKeys {
			req.Success = append(req.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(s.prefix + name), Value: []byte(v + name)}}})
		}
		if r, err = kv.Txn(ctx, req); err == nil {
			for _, name := range realKeys {
				h.add(slot, realKVIn{Op: "put", Key: s.prefix + name, Value: v + name}, realKVOut{Rev: r.Header.Revision}, call)
			}
			desc = fmt.Sprintf("put-all %s* @%d", v, r.Header.Revision)
		} else {
			for _, name := range realKeys {
				h.addFailed(slot, realKVIn{Op: "put", Key: s.prefix + name, Value: v + name}, call, err)
			}
		}
	}
	h.count(err)
	if err != nil {
		return fmt.Sprintf("%v (value %s): failed, may have happened: %v", op, v, err), err
	}
	return desc, nil
}

func realPrefixEnd(p string) string {
	b := []byte(p)
	b[len(b)-1]++
	return string(b)
}

// ---- watches ----

func (s *realRun) watchRange(w realWatchSpec) (key, end []byte) {
	switch w.Range {
	case 0, 1:
		return []byte(s.key(w.Key)), nil
	case 2:
		return []byte(s.prefix + "b"), []byte(s.prefix + "d")
	case 3:
		return []byte(s.prefix + "c"), []byte(realPrefixEnd(s.prefix))
	default:
		return []byte(s.prefix), []byte(realPrefixEnd(s.prefix))
	}
}

// watch creates the same watch through the proxy and directly, and waits
// for both created responses (and both compaction responses when its start
// revision is compacted).
func (s *realRun) watch(spec realWatchSpec) {
	cur := s.rev()
	var start int64
	switch spec.Start {
	case 0:
		start = cur + 1
	case 1:
		start = s.observed[spec.Back%len(s.observed)]
	case 2:
		start = cur
	default:
		start = cur + spec.Ahead
	}
	key, end := s.watchRange(spec)
	mk := func() *pb.WatchCreateRequest {
		r := &pb.WatchCreateRequest{Key: key, RangeEnd: end, StartRevision: start, PrevKv: spec.PrevKV}
		switch spec.Filter {
		case 0:
			r.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
		case 1:
			r.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}
		}
		return r
	}
	p := &realPair{n: len(s.pairs), spec: spec, start: start, compactedAt: s.e.compacted}
	p.req = fmt.Sprintf("watch #%d (stream %d, %s from %d, prev_kv=%v, filters=%v)", p.n, spec.Stream, realRangeName(spec), start, spec.PrevKV, mk().Filters)
	s.pairs = append(s.pairs, p)
	ps, ds := s.proxy[spec.Stream], s.directs[spec.Stream]
	p.p = s.send(ps, mk())
	p.d = s.send(ds, mk())
	s.await(ps, p.req+" created", func() bool { return p.p.created })
	s.await(ds, p.req+" created", func() bool { return p.d.created })
	compacted := start < s.e.compacted
	if compacted {
		s.await(ps, fmt.Sprintf("%s: compaction response (compacted at %d)", p.req, s.e.compacted), func() bool { return p.p.ended })
		s.await(ds, fmt.Sprintf("%s: compaction response (compacted at %d)", p.req, s.e.compacted), func() bool { return p.d.ended })
	}
	pw, dw := p.p.snapshot(), p.d.snapshot()
	s.tracef("    %s: proxy id %d created at %d, direct id %d created at %d; compacted: %v", p.req, pw.id, pw.createdRev, dw.id, dw.createdRev, compacted)
	// created carries the store revision at creation: no older than when
	// the request was sent, no newer than after the answer came.
	after := s.rev()
	for _, w := range []struct {
		side string
		w    realWatch
	}{{"proxy", pw}, {"direct", dw}} {
		if w.w.createdRev < cur || w.w.createdRev > after {
			s.problems = append(s.problems, fmt.Sprintf("%s: %s created response at revision %d, outside [%d, %d] (revisions before the request and after the answer)",
				p.req, w.side, w.w.createdRev, cur, after))
		}
	}
}

func (s *realRun) send(st *realStream, req *pb.WatchCreateRequest) *realWatch {
	w, err := st.create(req)
	if err != nil {
		s.fatalf("%s: sending a create: %v", st.name, err)
	}
	return w
}

func (s *realRun) await(st *realStream, what string, cond func() bool) {
	s.t.Helper()
	if err := st.await(s.ctx, realWait, cond); err != nil {
		s.fatalf("%s: waiting for %s: %v\n%s", st.name, what, err, st.dump())
	}
}

// livePairs are the watches still live on both sides.
func (s *realRun) livePairs() []*realPair {
	var live []*realPair
	for _, p := range s.pairs {
		if !p.p.isEnded() && !p.d.isEnded() {
			live = append(live, p)
		}
	}
	return live
}

func (s *realRun) cancelWatch(pick int) {
	live := s.livePairs()
	if len(live) == 0 {
		s.tracef("    no live watch")
		return
	}
	p := live[pick%len(live)]
	p.horizon = s.barrier("before cancelling " + p.req)
	ps, ds := s.proxy[p.spec.Stream], s.directs[p.spec.Stream]
	for _, sw := range []struct {
		st *realStream
		w  *realWatch
	}{{ps, p.p}, {ds, p.d}} {
		if err := sw.st.cancel(sw.w.snapshot().id); err != nil {
			s.fatalf("%s: sending a cancel: %v", sw.st.name, err)
		}
	}
	s.await(ps, p.req+" cancel response", func() bool { return p.p.ended })
	s.await(ds, p.req+" cancel response", func() bool { return p.d.ended })
	s.tracef("    cancelled %s after barrier at %d", p.req, p.horizon)
}

// barrier brings every stream with live watches up to a fresh revision T
// and returns T: every event up to T has been delivered on every watch.
func (s *realRun) barrier(why string) int64 {
	// A fresh write makes any etcd progress answer at T or later one
	// computed after every watch made so far, and takes the store past
	// every future start revision (etcd answers progress only then).
	target := s.fill()
	for _, p := range s.pairs {
		for !(p.p.isEnded() && p.d.isEnded()) && target < p.start {
			target = s.fill()
		}
	}
	for i := range s.proxy {
		s.proxyProgress(s.proxy[i], target, why)
		s.directProgress(s.directs[i], target, why)
	}
	return target
}

// proxyProgress asks the proxy for progress once and waits for the answer:
// the proxy answers every request, in order, at a revision no lower than
// the store's when the request came.
func (s *realRun) proxyProgress(st *realStream, target int64, why string) {
	if !st.hasLive() {
		return
	}
	idx, err := st.requestProgress()
	if err != nil {
		s.fatalf("%s: sending a progress request: %v", st.name, err)
	}
	s.await(st, fmt.Sprintf("the answer to progress request %d (barrier at %d %s)", idx, target, why), func() bool { return len(st.progress) > idx })
	st.mu.Lock()
	got := st.progress[idx]
	st.mu.Unlock()
	if got < target {
		s.fatalf("%s: progress request %d sent after revision %d was written answered at %d (barrier %s)\n%s", st.name, idx, target, got, why, st.dump())
	}
}

// directProgress asks etcd for progress until it answers at target or
// later: etcd drops a request while a watch of the stream is not synced.
func (s *realRun) directProgress(st *realStream, target int64, why string) {
	if err := st.reapCompacted(); err != nil {
		s.fatalf("%s: cancelling compacted watches: %v", st.name, err)
	}
	deadline := time.Now().Add(realWait)
	for st.hasLive() {
		if _, err := st.requestProgress(); err != nil {
			s.fatalf("%s: sending a progress request: %v", st.name, err)
		}
		err := st.await(s.ctx, 250*time.Millisecond, func() bool { return st.maxProgress() >= target || !st.hasLiveLocked() })
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.fatalf("%s: no progress at %d (barrier %s) after %v: %v\n%s", st.name, target, why, realWait, err, st.dump())
		}
	}
}

// ---- compaction and the member stop ----

func (s *realRun) compact(pick int) {
	cur := s.rev()
	var cands []int64
	for _, r := range s.observed {
		if r > s.e.compacted && r <= cur && r > 1 {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		s.tracef("    nothing to compact (compacted at %d)", s.e.compacted)
		return
	}
	rev := cands[pick%len(cands)]
	t := s.barrier(fmt.Sprintf("before compacting at %d", rev))
	s.retry(fmt.Sprintf("compacting at %d", rev), func(ctx context.Context) error {
		_, err := s.directKV().Compact(ctx, &pb.CompactionRequest{Revision: rev})
		if errors.Is(err, rpctypes.ErrGRPCCompacted) {
			return nil // an earlier try went through
		}
		return err
	})
	s.e.compacted = rev
	// Every running member applies the compaction before anything else
	// happens, so that a watch from before it is refused alike everywhere.
	for i := range s.e.cl.Members {
		if i != s.stopped {
			s.waitCompacted(i, rev)
		}
	}
	s.tracef("    compacted at %d after barrier at %d", rev, t)
}

func (s *realRun) waitCompacted(member int, rev int64) {
	kv := pb.NewKVClient(s.e.memberCC[member])
	s.retry(fmt.Sprintf("%s applying the compaction at %d", s.e.cl.Members[member].Name, rev), func(ctx context.Context) error {
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("fill/"), Revision: rev - 1, Serializable: true})
		if errors.Is(err, rpctypes.ErrGRPCCompacted) {
			return nil
		}
		if err == nil {
			return fmt.Errorf("revision %d still readable", rev-1)
		}
		return err
	})
}

// stop stops the member the proxy forwards to while ops run through the
// proxy.
func (s *realRun) stop(step int, ops []realOp) {
	inUse := s.e.member(s.e.p.UpstreamMember())
	if inUse < 0 || inUse == s.direct || s.stopped >= 0 {
		s.tracef("    not stopping: the proxy forwards to %q", s.e.p.UpstreamMember())
		s.batch(step, ops)
		return
	}
	m := s.e.cl.Members[inUse]
	s.stopped, s.victim = inUse, inUse // close restarts it whatever happens
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Stop()
	}()
	s.loop(step, ops, done)
	select {
	case <-done:
	case <-time.After(realWait):
		s.fatalf("%s did not stop within %v", m.Name, realWait)
	}
	s.tracef("    stopped %s; the proxy now forwards to %q", m.Name, s.e.p.UpstreamMember())
}

func (s *realRun) restart() {
	if s.stopped < 0 {
		return
	}
	m := s.e.cl.Members[s.stopped]
	if err := m.Restart(); err != nil {
		s.e.broken = fmt.Errorf("restarting %s: %w", m.Name, err)
		s.fatalf("restarting %s: %v", m.Name, err)
	}
	i := s.stopped
	s.stopped = -1
	// It is back once it has caught up with the cluster.
	target := s.rev()
	kv := pb.NewKVClient(s.e.memberCC[i])
	s.retry(m.Name+" catching up after its restart", func(ctx context.Context) error {
		r, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("fill/"), Serializable: true})
		if err == nil && r.Header.Revision < target {
			err = fmt.Errorf("at revision %d of %d", r.Header.Revision, target)
		}
		return err
	})
	if s.e.compacted > 1 {
		s.waitCompacted(i, s.e.compacted)
	}
	s.tracef("    restarted %s", m.Name)
}

// ---- the end of a schedule ----

func (s *realRun) finish() {
	s.restart()
	end := s.barrier("at the end")
	s.tracef("end: barrier at %d", end)
	problems := s.problems
	for i := range s.proxy {
		for _, st := range []*realStream{s.proxy[i], s.directs[i]} {
			st.mu.Lock()
			for _, v := range st.violations {
				problems = append(problems, st.name+": "+v)
			}
			st.mu.Unlock()
		}
	}
	for _, p := range s.pairs {
		d, tolerated := p.compare(end)
		if d != "" {
			problems = append(problems, d)
		}
		if tolerated > 0 {
			s.e.t.Logf("%s%s: %d events with a prev_kv through the proxy that etcd left out (previous revision compacted at %d; tolerated, see realSame)",
				s.prefix, p.req, tolerated, p.compactedAt)
		}
	}
	if lin := s.hist.check(s.e.t.Logf); lin != "" {
		problems = append(problems, lin)
	}
	if len(problems) > 0 {
		s.fatalf("%d problems:\n%s", len(problems), strings.Join(problems, "\n\n"))
	}
	// Once every client stream has gone, the proxy holds no watch state.
	for i := range s.proxy {
		s.proxy[i].close()
		s.directs[i].close()
	}
	deadline := time.Now().Add(realLeakWait)
	for {
		held := testutil.NodeEmpty(s.e.p.CoreState())
		if held == "" {
			break
		}
		if time.Now().After(deadline) {
			s.fatalf("the proxy still holds %s %v after every client stream closed", held, realLeakWait)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-s.ctx.Done():
		}
	}
	// Nor does etcd hold a watcher for it (the members run in this
	// process and share etcd's metrics).
	for {
		n := testutil.EtcdWatchers(s.e.t)
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.fatalf("etcd still has %v watchers %v after every client stream closed", n, realLeakWait)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-s.ctx.Done():
		}
	}
}

// compare returns how the proxy watch differs from its direct twin, or "".
// The second result counts the events on which the watches differ only
// as tolerated by realSame.
func (p *realPair) compare(end int64) (string, int) {
	pw, dw := p.p.snapshot(), p.d.snapshot()
	horizon := end
	if p.horizon > 0 {
		horizon = p.horizon
	}
	var diffs []string
	pin, pout := pw.split(horizon)
	din, dout := dw.split(horizon)
	i, tolerated := realFirstDiff(pin, din, p.compactedAt)
	if i >= 0 {
		diffs = append(diffs, fmt.Sprintf("events up to revision %d differ from event %d on", horizon, i))
	}
	// After a cancel's barrier each may stop anywhere, but on one story;
	// after the end barrier only a write that failed its deadline and
	// landed late can show up.
	if n := min(len(pout), len(dout)); n > 0 {
		i, more := realFirstDiff(pout[:n], dout[:n], p.compactedAt)
		tolerated += more
		if i >= 0 {
			diffs = append(diffs, fmt.Sprintf("events after revision %d are not one a prefix of the other", horizon))
		}
	}
	if pw.refused != dw.refused {
		diffs = append(diffs, fmt.Sprintf("create refused: proxy %v, direct %v", pw.refused, dw.refused))
	}
	if pw.compactRev != dw.compactRev {
		diffs = append(diffs, fmt.Sprintf("compaction response: proxy at %d, direct at %d", pw.compactRev, dw.compactRev))
	}
	if pw.canceled != dw.canceled || pw.ended != dw.ended {
		diffs = append(diffs, fmt.Sprintf("ended: proxy %v (canceled %v %q), direct %v (canceled %v %q)", pw.ended, pw.canceled, pw.reason, dw.ended, dw.canceled, dw.reason))
	}
	if p.horizon > 0 && (!pw.canceled || pw.compactRev != 0) {
		diffs = append(diffs, "the proxy watch was cancelled but got no plain cancel response")
	}
	if len(diffs) == 0 {
		return "", tolerated
	}
	first, _ := realFirstDiff(pw.events, dw.events, p.compactedAt)
	return fmt.Sprintf("%s: through the proxy (id %d) differs from directly (id %d):\n  %s\n%s",
		p.req, pw.id, dw.id, strings.Join(diffs, "\n  "), realSideBySide(pw.events, dw.events, first)), tolerated
}

type realEv struct {
	rev  int64
	base string // type key=value@mod_revision
	prev string // value@mod_revision of prev_kv, or ""
	line string // both
}

// realSame reports whether proxy event p is direct event d, and whether
// only by tolerance. etcd reads an event's prev_kv from its store when it
// sends the event, and leaves prev_kv out when the previous revision is
// compacted by then: a watch that starts at the compaction revision gets
// no prev_kv for an event at that revision. The proxy may still hold that
// event with its prev_kv, from an upstream watch (always with prev_kv) that
// was open before the compaction, and hand it over; etcd itself does the
// same to a watch that was synced when the event happened. That, and only
// that, is tolerated: same event, etcd without prev_kv, the proxy with
// one, the previous revision compacted when the watches were made.
func realSame(p, d realEv, compactedAt int64) (same, tolerated bool) {
	if p.line == d.line {
		return true, false
	}
	if p.base == d.base && d.prev == "" && p.prev != "" && p.rev-1 < compactedAt {
		return true, true
	}
	return false, false
}

// realFirstDiff returns the index of the first proxy event that is not
// its direct twin, or -1, and how many matched only by tolerance.
func realFirstDiff(p, d []realEv, compactedAt int64) (int, int) {
	tolerated := 0
	for i := 0; i < len(p) || i < len(d); i++ {
		if i >= len(p) || i >= len(d) {
			return i, tolerated
		}
		same, tol := realSame(p[i], d[i], compactedAt)
		if !same {
			return i, tolerated
		}
		if tol {
			tolerated++
		}
	}
	return -1, tolerated
}

// realSideBySide shows both event lists around their first difference.
func realSideBySide(p, d []realEv, first int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %-4s %-44s %s\n", "#", fmt.Sprintf("proxy (%d events)", len(p)), fmt.Sprintf("direct (%d events)", len(d)))
	from, to := 0, max(len(p), len(d))
	if first >= 0 {
		from, to = max(0, first-5), min(to, first+15)
	} else {
		from = max(0, to-10)
	}
	if from > 0 {
		fmt.Fprintf(&b, "  ... %d identical events\n", from)
	}
	for i := from; i < to; i++ {
		var l, r string
		if i < len(p) {
			l = p[i].line
		}
		if i < len(d) {
			r = d[i].line
		}
		mark := " "
		if l != r {
			mark = "≠"
		}
		if i == first {
			mark = ">"
		}
		fmt.Fprintf(&b, "%s %-4d %-44s %s\n", mark, i, l, r)
	}
	if rest := max(len(p), len(d)) - to; rest > 0 {
		fmt.Fprintf(&b, "  ... %d more rows\n", rest)
	}
	return b.String()
}

// ---- raw watch streams ----

type realStream struct {
	name   string
	strip  string
	st     grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse]
	stop   context.CancelFunc
	done   chan struct{}
	sendMu sync.Mutex

	mu         sync.Mutex
	changed    chan struct{}
	pending    []*realWatch // creates waiting for their created response
	byID       map[int64]*realWatch
	all        []*realWatch
	progress   []int64 // revisions of the progress answers, in order
	sent       int     // progress requests sent
	err        error
	violations []string
}

type realWatch struct {
	st         *realStream
	req        *pb.WatchCreateRequest
	id         int64
	created    bool
	createdRev int64
	refused    bool
	events     []realEv
	lastRev    int64
	inFragment bool
	ended      bool
	canceled   bool
	compactRev int64
	reason     string
	reap       bool // a cancel was sent after its compaction response
	reaped     bool // and answered
}

func (s *realRun) openStream(cc *grpc.ClientConn, name string) *realStream {
	ctx, cancel := context.WithCancel(s.ctx)
	st, err := pb.NewWatchClient(cc).Watch(ctx)
	if err != nil {
		cancel()
		s.fatalf("opening %s: %v", name, err)
	}
	r := &realStream{name: name, strip: s.prefix, st: st, stop: cancel, done: make(chan struct{}), changed: make(chan struct{}), byID: map[int64]*realWatch{}}
	go r.recv()
	return r
}

func (r *realStream) close() {
	r.stop()
	<-r.done
}

func (r *realStream) recv() {
	defer close(r.done)
	for {
		resp, err := r.st.Recv()
		r.mu.Lock()
		if err != nil {
			r.err = err
		} else {
			r.handle(resp)
		}
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (r *realStream) violate(format string, args ...any) {
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
}

func (r *realStream) handle(resp *pb.WatchResponse) {
	rev := resp.Header.GetRevision()
	switch {
	case resp.Created:
		if len(r.pending) == 0 {
			r.violate("created response with no create pending: %v", resp)
			return
		}
		w := r.pending[0]
		r.pending = r.pending[1:]
		w.created, w.id, w.createdRev = true, resp.WatchId, rev
		if resp.Canceled {
			w.refused, w.ended, w.canceled, w.reason = true, true, true, resp.CancelReason
			return
		}
		if old := r.byID[resp.WatchId]; old != nil && !old.ended {
			r.violate("watch ID %d created again while still in use", resp.WatchId)
		}
		r.byID[resp.WatchId] = w
	case resp.WatchId == -1 && len(resp.Events) == 0 && !resp.Canceled && resp.CompactRevision == 0:
		r.progress = append(r.progress, rev)
	default:
		w := r.byID[resp.WatchId]
		if w == nil {
			r.violate("response for unknown watch %d: %v", resp.WatchId, resp)
			return
		}
		if w.ended {
			if w.reap && !w.reaped && resp.Canceled && len(resp.Events) == 0 && resp.CompactRevision == 0 {
				w.reaped = true // etcd's answer to reapCompacted's cancel
				return
			}
			r.violate("watch %d: response after it ended: %v", resp.WatchId, resp)
			return
		}
		if len(resp.Events) > 0 {
			if first := resp.Events[0].Kv.ModRevision; first <= w.lastRev && !w.inFragment {
				r.violate("watch %d: revision %d after a response that ended at %d (split or repeated)", resp.WatchId, first, w.lastRev)
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision < w.lastRev {
					r.violate("watch %d: event at %d after one at %d", resp.WatchId, ev.Kv.ModRevision, w.lastRev)
				}
				e := realEv{rev: ev.Kv.ModRevision, base: fmt.Sprintf("%s %s=%s@%d", ev.Type, strings.TrimPrefix(string(ev.Kv.Key), r.strip), ev.Kv.Value, ev.Kv.ModRevision)}
				e.line = e.base
				if ev.PrevKv != nil {
					e.prev = fmt.Sprintf("%s@%d", ev.PrevKv.Value, ev.PrevKv.ModRevision)
					e.line += " prev=" + e.prev
				}
				w.events = append(w.events, e)
				w.lastRev = ev.Kv.ModRevision
			}
			w.inFragment = resp.Fragment
		}
		switch {
		case resp.CompactRevision != 0:
			w.ended, w.canceled, w.compactRev, w.reason = true, resp.Canceled, resp.CompactRevision, resp.CancelReason
		case resp.Canceled:
			w.ended, w.canceled, w.reason = true, true, resp.CancelReason
		}
	}
}

func (r *realStream) send(req *pb.WatchRequest) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.st.Send(req)
}

func (r *realStream) create(req *pb.WatchCreateRequest) (*realWatch, error) {
	w := &realWatch{st: r, req: req}
	r.mu.Lock()
	r.pending = append(r.pending, w)
	r.all = append(r.all, w)
	r.mu.Unlock()
	return w, r.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: req}})
}

func (r *realStream) cancel(id int64) error {
	return r.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}})
}

// reapCompacted cancels the watches etcd ended by compaction. etcd keeps
// such a watch on its stream until the client cancels it (clientv3 does),
// and answers no progress request on the stream meanwhile.
func (r *realStream) reapCompacted() error {
	var ids []int64
	r.mu.Lock()
	for _, w := range r.all {
		if w.compactRev != 0 && !w.reap {
			w.reap = true
			ids = append(ids, w.id)
		}
	}
	r.mu.Unlock()
	for _, id := range ids {
		if err := r.cancel(id); err != nil {
			return err
		}
	}
	return nil
}

// requestProgress sends a progress request and returns its index among the
// requests sent on the stream.
func (r *realStream) requestProgress() (int, error) {
	r.mu.Lock()
	idx := r.sent
	r.sent++
	r.mu.Unlock()
	return idx, r.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
}

// await waits until cond, checked under the stream's lock, holds.
func (r *realStream) await(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		r.mu.Lock()
		ok, ch, err := cond(), r.changed, r.err
		r.mu.Unlock()
		if ok {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream broke: %w", err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *realStream) hasLiveLocked() bool {
	for _, w := range r.all {
		if w.created && !w.ended {
			return true
		}
	}
	return false
}

func (r *realStream) hasLive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hasLiveLocked()
}

func (r *realStream) maxProgress() int64 {
	var m int64
	for _, p := range r.progress {
		m = max(m, p)
	}
	return m
}

func (w *realWatch) isEnded() bool {
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	return w.ended
}

// snapshot copies what the watch has received so far.
func (w *realWatch) snapshot() realWatch {
	w.st.mu.Lock()
	defer w.st.mu.Unlock()
	c := *w
	c.events = append([]realEv(nil), w.events...)
	return c
}

// split returns the events up to rev and those after it.
func (w realWatch) split(rev int64) (in, out []realEv) {
	for i, ev := range w.events {
		if ev.rev > rev {
			return w.events[:i], w.events[i:]
		}
	}
	return w.events, nil
}

func (r *realStream) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d creates pending, progress answers %v to %d requests, error %v\n", r.name, len(r.pending), r.progress, r.sent, r.err)
	for _, w := range r.all {
		fmt.Fprintf(&b, "  watch id %d from %d: created=%v at %d, ended=%v canceled=%v compact=%d %q, %d events",
			w.id, w.req.StartRevision, w.created, w.createdRev, w.ended, w.canceled, w.compactRev, w.reason, len(w.events))
		if n := len(w.events); n > 0 {
			fmt.Fprintf(&b, ", last %s", w.events[n-1].line)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// ---- linearizability of the KV operations ----

// realKVIn is an operation on one key: put, delete, get, or cas (put if
// absent, else delete).
type realKVIn struct {
	Op, Key, Value string
}

// realKVOut is its result; Unknown for an operation that failed.
type realKVOut struct {
	Unknown   bool
	Err       string
	Exists    bool
	Value     string
	Rev       int64 // put, delete, cas: the header revision; get: the mod revision
	Deleted   int64
	Succeeded bool
}

func (o realKVOut) describe() string {
	switch {
	case o.Unknown:
		return "unknown (" + o.Err + ")"
	case o.Exists:
		return fmt.Sprintf("%s@%d", o.Value, o.Rev)
	}
	return "absent"
}

// realKVState is one key: its value and the revision of its last change (0
// when a change of unknown revision came last).
type realKVState struct {
	Exists bool
	Value  string
	Rev    int64
}

func realKVStep(s realKVState, in realKVIn, out realKVOut) (bool, realKVState) {
	after := func(rev int64) bool { return s.Rev == 0 || rev > s.Rev }
	switch in.Op {
	case "put":
		if out.Unknown {
			return true, realKVState{Exists: true, Value: in.Value}
		}
		return after(out.Rev), realKVState{Exists: true, Value: in.Value, Rev: out.Rev}
	case "delete":
		if out.Unknown {
			return true, realKVState{}
		}
		if !s.Exists {
			return out.Deleted == 0, s
		}
		return out.Deleted == 1 && after(out.Rev), realKVState{Rev: out.Rev}
	case "cas":
		if out.Unknown {
			if s.Exists {
				return true, realKVState{}
			}
			return true, realKVState{Exists: true, Value: in.Value}
		}
		if out.Succeeded {
			return !s.Exists && after(out.Rev), realKVState{Exists: true, Value: in.Value, Rev: out.Rev}
		}
		return s.Exists && after(out.Rev), realKVState{Rev: out.Rev}
	case "get":
		if out.Unknown {
			return true, s
		}
		if !out.Exists {
			return !s.Exists, s
		}
		ok := s.Exists && out.Value == s.Value && (s.Rev == 0 || out.Rev == s.Rev)
		return ok, realKVState{Exists: true, Value: s.Value, Rev: out.Rev}
	}
	panic("unknown operation " + in.Op)
}

var realKVModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(realKVIn).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return realKVState{} },
	Step: func(state, input, output any) (bool, any) {
		return realKVStep(state.(realKVState), input.(realKVIn), output.(realKVOut))
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(realKVIn), output.(realKVOut)
		switch {
		case out.Unknown:
			return fmt.Sprintf("%s(%s %s) -> %s", in.Op, in.Key, in.Value, out.describe())
		case in.Op == "get":
			return fmt.Sprintf("get(%s) -> %s", in.Key, out.describe())
		case in.Op == "delete":
			return fmt.Sprintf("delete(%s) -> %d deleted @%d", in.Key, out.Deleted, out.Rev)
		case in.Op == "cas":
			return fmt.Sprintf("put-if-absent-else-delete(%s %s) -> put=%v @%d", in.Key, in.Value, out.Succeeded, out.Rev)
		}
		return fmt.Sprintf("put(%s %s) -> @%d", in.Key, in.Value, out.Rev)
	},
	DescribeState: func(state any) string {
		s := state.(realKVState)
		if !s.Exists {
			return fmt.Sprintf("absent (last change @%d)", s.Rev)
		}
		return fmt.Sprintf("%s@%d", s.Value, s.Rev)
	},
}

type realHistory struct {
	start  time.Time
	mu     sync.Mutex
	ops    []porcupine.Operation
	calls  int
	failed int
}

func newRealHistory() *realHistory { return &realHistory{start: time.Now()} }

func (h *realHistory) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *realHistory) add(client int, in realKVIn, out realKVOut, call int64) {
	ret := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
}

// addFailed records an operation that failed: it may have taken effect at
// any time after its call, so it is pending forever. A failed read is left
// out: pending with any result, it constrains nothing.
func (h *realHistory) addFailed(client int, in realKVIn, call int64, err error) {
	if in.Op == "get" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: realKVOut{Unknown: true, Err: err.Error()}, Call: call, Return: math.MaxInt64})
}

func (h *realHistory) count(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if err != nil {
		h.failed++
	}
}

// check returns "" when the history is linearizable (or the checker ran
// out of time, which is logged), or what is not.
func (h *realHistory) check(logf func(string, ...any)) string {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(realKVModel, ops, 30*time.Second)
	switch res {
	case porcupine.Ok:
		return ""
	case porcupine.Unknown:
		logf("porcupine found nothing wrong in %d operations but timed out before proving them linearizable", len(ops))
		return ""
	}
	var b strings.Builder
	b.WriteString("KV operations through the proxy are not linearizable (porcupine: Illegal)")
	if f, err := os.CreateTemp("", "sim-real-linearizability-*.html"); err == nil {
		if err := porcupine.Visualize(realKVModel, info, f); err == nil {
			fmt.Fprintf(&b, "; visualization: %s", f.Name())
		}
		f.Close()
	}
	// Name the keys whose history is illegal, with their operations.
	for _, part := range realKVModel.Partition(ops) {
		one := realKVModel
		one.Partition = nil
		if porcupine.CheckOperations(one, part) {
			continue
		}
		sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
		fmt.Fprintf(&b, "\nkey %s:", part[0].Input.(realKVIn).Key)
		for _, op := range part {
			ret := "∞"
			if op.Return != math.MaxInt64 {
				ret = strconv.FormatFloat(float64(op.Return)/1e6, 'f', 3, 64)
			}
			fmt.Fprintf(&b, "\n  [%.3fms, %sms] client %d: %s", float64(op.Call)/1e6, ret, op.ClientId, realKVModel.DescribeOperation(op.Input, op.Output))
		}
	}
	return b.String()
}
