// Command watchfanout is the watch fan-out load generator used by EVAL.md
// (section "Watch fan-out", driven by bench/watchfanout/run.sh).
//
// It opens --conns gRPC connections to one target (etcd itself, etcd's
// grpc-proxy or this proxy), opens one raw etcdserverpb Watch stream per
// connection (no clientv3; responses read by a decoder that takes only what
// the checks need, decode.go), and spreads --watchers watches on one key
// evenly over those streams. Every watch starts at the revision after etcd's current
// one (with --start-now, none: from the revision at its creation, the same
// one as nothing writes before every watch is created), so each must
// deliver every later write to the key exactly once. Once
// every watch is created, it writes the key directly to etcd over a separate
// connection (--put-endpoint), so that every target sees the same load:
// first --burst puts as fast as possible, then --paced puts at --rate per
// second. For every put it records the send time and the revision etcd gave
// it; for every delivered event, the put-to-event latency (event ModRevision
// -> that put's send time).
//
// It reports, per phase, the events delivered, the delivered events per
// second (events / time from the phase's first put to its last delivery),
// and the p50/p99 latency; the watchers cut (watches the server canceled,
// or whose stream ended with an error); and any watcher that missed,
// duplicated or reordered an event, with examples.
//
// With --keys K (default 1) the watchers and the puts are spread over K
// keys (--key/0 .. --key/K-1; watcher i on key i mod K, the j-th put of
// the run on key j mod K), and every watcher must get every write to its
// own key exactly once, and nothing else.
//
// With --idle-keys K it instead creates K watches on K distinct keys, prints
// "connected" once the streams are open (before any watch) and "ready" once
// every watch is created, keeps them open for --idle-hold and exits; the
// driver reads the target's RSS around those lines.
//
// With --auth=on or --auth=both it measures the fan-out again with etcd auth
// enabled, in the same run (see auth.go and phases.go): the watches then
// carry a token of a user who may read --key, and the puts go to etcd as
// root. It also reports, per phase, the watchers etcd holds
// (etcd_debugging_mvcc_watcher_total from the member's /metrics).
//
// Every wait has a deadline; the tool always exits by itself.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

type options struct {
	endpoints      string
	watchers       int
	conns          int
	key            string
	keys           int
	burst          int
	paced          int
	rate           float64
	putEndpoint    string
	putConcurrency int
	valueSize      int
	idleKeys       int
	idleSettle     time.Duration
	idleHold       time.Duration
	createTimeout  time.Duration
	startNow       bool
	settle         time.Duration
	phaseTimeout   time.Duration
	timeout        time.Duration
	jsonOut        bool
	label          string

	auth        string // off, on, both (phases.go)
	authTokens  string // one, per-conn, both
	phaseSettle time.Duration
	etcdMetrics string
	targetPID   int
	etcdPID     int
}

func main() {
	var o options
	flag.StringVar(&o.endpoints, "endpoints", "127.0.0.1:2379", "target to watch through (comma separated; connections are spread over them)")
	flag.IntVar(&o.watchers, "watchers", 1000, "watches on --key")
	flag.IntVar(&o.conns, "conns", 100, "client gRPC connections, one watch stream each; watches are spread evenly")
	flag.StringVar(&o.key, "key", "watchfanout/key", "key to watch and write (with --idle-keys, the prefix of the keys)")
	flag.IntVar(&o.keys, "keys", 1, "fan-out mode: spread the watchers and the puts over this many keys (--key/0.. --key/K-1; 1: --key itself)")
	flag.IntVar(&o.burst, "burst", 200, "puts issued as fast as possible")
	flag.IntVar(&o.paced, "paced", 200, "puts issued at --rate after the burst phase")
	flag.Float64Var(&o.rate, "rate", 100, "paced puts per second")
	flag.StringVar(&o.putEndpoint, "put-endpoint", "", "etcd endpoint the puts go to directly (default: first of --endpoints)")
	flag.IntVar(&o.putConcurrency, "put-concurrency", 8, "concurrent putters in the burst phase")
	flag.IntVar(&o.valueSize, "value-size", 128, "bytes per value")
	flag.IntVar(&o.idleKeys, "idle-keys", 0, "idle mode: watch this many distinct keys, print readiness, hold, exit")
	flag.DurationVar(&o.idleSettle, "idle-settle", 3*time.Second, "idle mode: pause after \"connected\" before creating watches")
	flag.DurationVar(&o.idleHold, "idle-hold", 5*time.Second, "idle mode: how long to keep the watches open after \"ready\"")
	flag.DurationVar(&o.createTimeout, "create-timeout", 60*time.Second, "deadline for all watches to be created")
	flag.DurationVar(&o.settle, "settle", 0, "fan-out mode: pause between the last watch created and the first put (0: none)")
	flag.BoolVar(&o.startNow, "start-now", false, "fan-out mode: create the watches without a start revision (from etcd's current one, as a client watching from now does) instead of at the revision after it; nothing writes the keys until every watch is created, so every watcher must still get every put")
	flag.DurationVar(&o.phaseTimeout, "phase-timeout", 60*time.Second, "deadline for a phase's events after its last put")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "deadline for the whole run (with --auth other than off, for each phase)")
	flag.BoolVar(&o.jsonOut, "json", false, "print the result as one JSON object")
	flag.StringVar(&o.label, "label", "", "label copied into the result")
	flag.StringVar(&o.auth, "auth", "off", "off: fan-out without auth; on: with etcd auth enabled (the tool enables it on --put-endpoint as root, and disables it after); both: without, then with, in one run")
	flag.StringVar(&o.authTokens, "auth-tokens", "one", "with --auth: one (every stream carries one token), per-conn (each connection its own token for the same user), both (one, then per-conn)")
	flag.DurationVar(&o.phaseSettle, "phase-settle", 3*time.Second, "with --auth: pause before each phase, so that the last phase's watchers are gone from etcd")
	flag.StringVar(&o.etcdMetrics, "etcd-metrics", "", "with --auth: the etcd member's metrics URL (default: /metrics at --put-endpoint)")
	flag.IntVar(&o.targetPID, "target-pid", 0, "with --auth: PID of the target, whose CPU time and peak RSS are reported per phase (0: not reported)")
	flag.IntVar(&o.etcdPID, "etcd-pid", 0, "with --auth: PID of the etcd member, likewise")
	flag.Parse()
	if o.conns < 1 || o.keys < 1 || o.watchers < 0 || o.burst < 0 || o.paced < 0 || (o.paced > 0 && o.rate <= 0) {
		fmt.Fprintln(os.Stderr, "watchfanout: invalid flags")
		os.Exit(2)
	}
	if o.putEndpoint == "" {
		o.putEndpoint = strings.Split(o.endpoints, ",")[0]
	}
	phases, err := authPhases(o)
	if err != nil || (phases != nil && o.idleKeys > 0) {
		fmt.Fprintln(os.Stderr, "watchfanout: invalid flags:", cmp.Or(err, errors.New("--auth is for the fan-out mode, not --idle-keys")))
		os.Exit(2)
	}
	// The whole-run deadline is enforced even if something below ignores
	// ctx. With --auth, --timeout holds for each phase, and setting up and
	// tearing down auth has its own deadlines (authSetupTime).
	hard := o.timeout + 30*time.Second
	if phases != nil {
		hard = time.Duration(len(phases))*(o.timeout+o.phaseSettle) + authSetupTime(o) + 30*time.Second
	}
	go func() {
		time.Sleep(hard)
		fmt.Fprintln(os.Stderr, "watchfanout: hard deadline passed, exiting")
		os.Exit(3)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	switch {
	case o.idleKeys > 0:
		err = runIdle(ctx, o)
	case phases != nil:
		err = runAuth(o, phases)
	default:
		err = runFanout(ctx, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "watchfanout:", err)
		os.Exit(1)
	}
}

var t0 = time.Now()

// now is nanoseconds since start on the monotonic clock.
func now() int64 { return int64(time.Since(t0)) }

func dial(ep string) (*grpc.ClientConn, error) {
	ep = strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://")
	return grpc.NewClient("passthrough:///"+ep,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)))
}

// record is one delivered event: watcher index (within its stream), revision
// offset from the first watched revision, receive time.
type record struct {
	w int32
	r int32
	t int64
}

type stream struct {
	idx   int
	conn  *grpc.ClientConn
	st    *watchStream
	keys  [][]byte // key of each watch, in create order
	first []int    // global watcher index of local watcher 0.. (len(keys))

	mu       sync.Mutex
	ids      map[int64]int32 // server watch ID -> local index
	created  int
	canceled []string // per local watcher: cancel reason, "" if not canceled
	createOK []bool
	err      error // stream error, if it ended before we closed it
	errAt    int64

	got  []atomic.Int64 // events per local watcher
	recs []record       // only written by the receive goroutine
	done chan struct{}
}

type shared struct {
	base     int64 // first revision every watch starts at
	keys     int   // watcher i watches key i mod keys
	closing  atomic.Bool
	foreign  atomic.Int64 // events for revisions below base
	notEvent atomic.Int64 // responses that were neither created, canceled nor events (progress etc.)
}

func (s *stream) recvLoop(sh *shared) {
	defer close(s.done)
	resp := &watchResp{}
	for {
		err := s.st.Recv(resp)
		if err != nil {
			if !sh.closing.Load() {
				s.mu.Lock()
				s.err, s.errAt = err, now()
				s.mu.Unlock()
			}
			return
		}
		t := now()
		if resp.Created {
			s.mu.Lock()
			i := s.created
			s.created++
			if i < len(s.keys) {
				s.createOK[i] = !resp.Canceled
				if resp.Canceled {
					s.canceled[i] = "create refused: " + resp.CancelReason
				} else {
					s.ids[resp.WatchId] = int32(i)
				}
			}
			s.mu.Unlock()
			if len(resp.Revs) == 0 {
				continue
			}
		}
		s.mu.Lock()
		li, ok := s.ids[resp.WatchId]
		if ok && resp.Canceled {
			r := resp.CancelReason
			if r == "" {
				r = "canceled"
			}
			if resp.CompactRevision != 0 {
				r += fmt.Sprintf(" (compact revision %d)", resp.CompactRevision)
			}
			s.canceled[li] = r
		}
		s.mu.Unlock()
		if !ok {
			continue
		}
		if len(resp.Revs) == 0 {
			sh.notEvent.Add(1)
			continue
		}
		for _, rev := range resp.Revs {
			off := rev - sh.base
			if off < 0 {
				sh.foreign.Add(1)
				continue
			}
			s.recs = append(s.recs, record{w: li, r: int32(off), t: t})
		}
		s.got[li].Add(int64(len(resp.Revs)))
	}
}

func (s *stream) state(li int) (createOK bool, canceled string, streamErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createOK[li], s.canceled[li], s.err
}

// openStreams dials conns connections with one watch stream each and spreads
// the given keys over them (key i -> stream i mod conns). Stream c carries
// the auth token tokens(c), if tokens is not nil.
func openStreams(ctx context.Context, o options, keys func(i int) []byte, n int, sh *shared, tokens func(c int) string) ([]*stream, error) {
	eps := strings.Split(o.endpoints, ",")
	streams := make([]*stream, o.conns)
	for c := range streams {
		conn, err := dial(eps[c%len(eps)])
		if err != nil {
			return nil, err
		}
		sctx := ctx
		if tokens != nil {
			sctx = withToken(ctx, tokens(c))
		}
		st, err := openWatch(sctx, conn)
		if err != nil {
			return nil, fmt.Errorf("stream %d: %w", c, err)
		}
		streams[c] = &stream{idx: c, conn: conn, st: st, ids: map[int64]int32{}, done: make(chan struct{})}
	}
	for i := range n {
		s := streams[i%o.conns]
		s.keys = append(s.keys, keys(i))
		s.first = append(s.first, i)
	}
	for _, s := range streams {
		k := len(s.keys)
		s.canceled = make([]string, k)
		s.createOK = make([]bool, k)
		s.got = make([]atomic.Int64, k)
		go s.recvLoop(sh)
	}
	return streams, nil
}

// createWatches sends every stream's creates and waits until each has been
// answered, the stream failed, or the deadline passed. It returns the number
// of watches created.
func createWatches(streams []*stream, startRev int64, deadline time.Duration) (int, time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(streams))
	for i, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, k := range s.keys {
				err := s.st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
					CreateRequest: &pb.WatchCreateRequest{Key: k, StartRevision: startRev},
				}})
				if err != nil {
					errs[i] = fmt.Errorf("stream %d: send create: %w", s.idx, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	end := time.Now().Add(deadline)
	for {
		created, pending := 0, 0
		for _, s := range streams {
			s.mu.Lock()
			c := min(s.created, len(s.keys))
			if s.err == nil {
				pending += len(s.keys) - c
			}
			for i := range c {
				if s.createOK[i] {
					created++
				}
			}
			s.mu.Unlock()
		}
		if pending == 0 || time.Now().After(end) {
			return created, time.Since(start), errors.Join(errs...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func closeStreams(streams []*stream, sh *shared) {
	sh.closing.Store(true)
	for _, s := range streams {
		_ = s.st.CloseSend()
	}
	for _, s := range streams {
		_ = s.conn.Close()
	}
	for _, s := range streams {
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
		}
	}
}

func currentRevision(ctx context.Context, kv pb.KVClient) (int64, error) {
	r, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, Limit: 1, CountOnly: true})
	if err != nil {
		return 0, err
	}
	return r.Header.Revision, nil
}

// ---- idle mode ----

func runIdle(ctx context.Context, o options) error {
	sh := &shared{}
	keys := func(i int) []byte { return fmt.Appendf(nil, "%s/%06d", o.key, i) }
	streams, err := openStreams(ctx, o, keys, o.idleKeys, sh, nil)
	if err != nil {
		return err
	}
	defer closeStreams(streams, sh)
	emit(o, map[string]any{"phase": "connected", "conns": o.conns})
	time.Sleep(o.idleSettle)
	created, took, err := createWatches(streams, 0, o.createTimeout)
	if err != nil {
		return err
	}
	cut := 0
	for _, s := range streams {
		for li := range s.keys {
			ok, c, serr := s.state(li)
			if !ok || c != "" || serr != nil {
				cut++
			}
		}
	}
	emit(o, map[string]any{"phase": "ready", "watchers": created, "requested": o.idleKeys,
		"not_ok": cut, "create_ms": ms(took.Nanoseconds())})
	select {
	case <-time.After(o.idleHold):
	case <-ctx.Done():
	}
	return nil
}

func emit(o options, m map[string]any) {
	if o.jsonOut {
		b, _ := json.Marshal(m)
		fmt.Println(string(b))
		return
	}
	fmt.Println(m["phase"], m)
}

// ---- fan-out mode ----

type put struct {
	key  int // index of the key written
	rev  int64
	sent int64
	done int64
	err  error
}

type phaseResult struct {
	Puts          int     `json:"puts"`
	PutErrors     int     `json:"put_errors"`
	PutSeconds    float64 `json:"put_seconds"` // first put sent -> last put acknowledged
	Expected      int64   `json:"expected_events"`
	Delivered     int64   `json:"delivered_events"`
	WallSeconds   float64 `json:"wall_seconds"` // first put sent -> last event delivered
	EventsPerSec  float64 `json:"events_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	MaxMs         float64 `json:"max_ms"`
	TimedOut      bool    `json:"timed_out"`
	WaitedSeconds float64 `json:"waited_seconds"` // last put acknowledged -> phase complete or deadline
}

type result struct {
	Label          string         `json:"label,omitempty"`
	Target         string         `json:"target"`
	Watchers       int            `json:"watchers"`
	Keys           int            `json:"keys"`
	Conns          int            `json:"conns"`
	Created        int            `json:"created"`
	CreateSeconds  float64        `json:"create_seconds"`
	StartRevision  int64          `json:"start_revision"`
	Burst          phaseResult    `json:"burst"`
	Paced          phaseResult    `json:"paced"`
	Delivered      int64          `json:"delivered_events"`
	Expected       int64          `json:"expected_events"`
	WatchersCut    int            `json:"watchers_cut"`
	StreamsFailed  int            `json:"streams_failed"`
	CutReasons     map[string]int `json:"cut_reasons,omitempty"`
	WatchersShort  int            `json:"watchers_missing_events"` // not cut, yet missed events
	MissingEvents  int64          `json:"missing_events"`          // over watchers not cut
	Duplicates     int64          `json:"duplicate_events"`
	OutOfOrder     int64          `json:"out_of_order_events"`
	Foreign        int64          `json:"foreign_events"`
	NonEventResps  int64          `json:"non_event_responses"`
	Examples       []string       `json:"examples,omitempty"`
	WallSeconds    float64        `json:"wall_seconds"`
	ClientCPUSecs  float64        `json:"client_cpu_seconds"`
	ClientMaxRSSKB int64          `json:"client_max_rss_kb"`

	// Only with --auth other than off (phases.go, etcdstats.go); the
	// client's CPU and RSS above are then the whole process's so far.
	Auth         string        `json:"auth,omitempty"`   // phase: none, one-token, token-per-conn
	Tokens       int           `json:"tokens,omitempty"` // distinct tokens the streams carry
	EtcdWatchers *watcherStats `json:"etcd_watchers,omitempty"`
	Procs        *procStats    `json:"procs,omitempty"`
}

// phase is what one fan-out run watches and writes with. The zero value is
// the unauthenticated run of --auth=off, which samples nothing on etcd.
type phase struct {
	name       string             // result.Auth
	watchToken func(c int) string // token of stream c; nil: none
	tokens     int                // distinct tokens watchToken gives
	putToken   string             // token for the revision read and the puts; "": none
	mon        *monitor           // nil: nothing sampled
}

func runFanout(ctx context.Context, o options) error {
	res, err := fanout(ctx, o, phase{})
	if err != nil {
		return err
	}
	printResult(o, res)
	return nil
}

func printResult(o options, res *result) {
	if o.jsonOut {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	} else {
		printHuman(os.Stdout, res)
	}
}

// fanout runs the fan-out once: open the streams, create the watches, put
// the burst and the paced writes, wait for their events, analyze.
func fanout(ctx context.Context, o options, ph phase) (*result, error) {
	start := time.Now()
	putConn, err := dial(o.putEndpoint)
	if err != nil {
		return nil, err
	}
	defer putConn.Close()
	kv := pb.NewKVClient(putConn)
	putCtx := withToken(ctx, ph.putToken)
	rctx, rcancel := context.WithTimeout(putCtx, 10*time.Second)
	rev, err := currentRevision(rctx, kv)
	rcancel()
	if err != nil {
		return nil, fmt.Errorf("current revision from %s: %w", o.putEndpoint, err)
	}
	sh := &shared{base: rev + 1, keys: o.keys}
	keys := make([][]byte, o.keys)
	for k := range keys {
		keys[k] = []byte(o.key)
		if o.keys > 1 {
			keys[k] = fmt.Appendf(nil, "%s/%d", o.key, k)
		}
	}
	ph.mon.begin(ctx)
	streams, err := openStreams(ctx, o, func(i int) []byte { return keys[i%o.keys] }, o.watchers, sh, ph.watchToken)
	if err != nil {
		return nil, err
	}
	startRev := sh.base
	if o.startNow {
		startRev = 0
	}
	created, took, cerr := createWatches(streams, startRev, o.createTimeout)
	if cerr != nil {
		fmt.Fprintln(os.Stderr, "watchfanout: creating watches:", cerr)
	}
	ph.mon.watching(ctx)
	res := result{Label: o.label, Target: o.endpoints, Watchers: o.watchers, Keys: o.keys, Conns: o.conns,
		Created: created, CreateSeconds: took.Seconds(), StartRevision: sh.base,
		Auth: ph.name, Tokens: ph.tokens}

	value := make([]byte, o.valueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	doPut := func(p *put) {
		pctx, pcancel := context.WithTimeout(putCtx, 30*time.Second)
		defer pcancel()
		p.sent = now()
		r, err := kv.Put(pctx, &pb.PutRequest{Key: keys[p.key], Value: value})
		p.done = now()
		if err != nil {
			p.err = err
			return
		}
		p.rev = r.Header.Revision
	}

	time.Sleep(o.settle)

	// burst: --put-concurrency putters, as fast as etcd answers
	burst := make([]put, o.burst)
	for i := range burst {
		burst[i].key = i % o.keys
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, min(o.putConcurrency, o.burst)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(burst) {
					return
				}
				doPut(&burst[i])
			}
		}()
	}
	wg.Wait()
	res.Burst.TimedOut, res.Burst.WaitedSeconds = waitPhase(ctx, streams, sh, perKey(o.keys, burst), o.phaseTimeout)

	// paced: put i is issued at i/rate after the phase starts, each on its
	// own goroutine so that a slow put does not delay the schedule
	paced := make([]put, o.paced)
	for i := range paced {
		paced[i].key = (len(burst) + i) % o.keys
	}
	pstart := time.Now()
	for i := range paced {
		at := pstart.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		wg.Add(1)
		go func() { defer wg.Done(); doPut(&paced[i]) }()
	}
	wg.Wait()
	res.Paced.TimedOut, res.Paced.WaitedSeconds = waitPhase(ctx, streams, sh, perKey(o.keys, burst, paced), o.phaseTimeout)

	ph.mon.closing(ctx)
	closeStreams(streams, sh)
	res.EtcdWatchers, res.Procs = ph.mon.end()
	res.WallSeconds = time.Since(start).Seconds()
	analyze(&res, streams, sh, burst, paced)
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		res.ClientCPUSecs = tv(ru.Utime) + tv(ru.Stime)
		res.ClientMaxRSSKB = ru.Maxrss
	}
	return &res, nil
}

// perKey is the number of successful puts on each key.
func perKey(keys int, phases ...[]put) []int {
	n := make([]int, keys)
	for _, ps := range phases {
		for _, p := range ps {
			if p.err == nil {
				n[p.key]++
			}
		}
	}
	return n
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// waitPhase waits until every watcher that is still alive has received
// upTo[its key] events in total, or until the deadline after the phase's
// last put.
func waitPhase(ctx context.Context, streams []*stream, sh *shared, upTo []int, d time.Duration) (bool, float64) {
	start := time.Now()
	end := start.Add(d)
	for {
		pending := false
	scan:
		for _, s := range streams {
			for li := range s.got {
				if s.got[li].Load() >= int64(upTo[s.first[li]%sh.keys]) {
					continue
				}
				ok, c, serr := s.state(li)
				if ok && c == "" && serr == nil {
					pending = true
					break scan
				}
			}
		}
		if !pending {
			return false, time.Since(start).Seconds()
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return true, time.Since(start).Seconds()
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// slot maps a revision offset to its phase (1 burst, 2 paced; 0 none),
// put index and key index.
type slot struct {
	phase int8
	i     int32
	key   int32
}

func analyze(res *result, streams []*stream, sh *shared, burst, paced []put) {
	maxOff := int64(0)
	for _, ps := range [][]put{burst, paced} {
		for _, p := range ps {
			if p.err == nil {
				maxOff = max(maxOff, p.rev-sh.base)
			}
		}
	}
	slots := make([]slot, maxOff+1)
	expectRevs := make([]int, sh.keys) // by key
	okPuts := [2][]int{perKey(sh.keys, burst), perKey(sh.keys, paced)}
	for ph, ps := range [][]put{burst, paced} {
		for i, p := range ps {
			if p.err == nil && p.rev >= sh.base {
				slots[p.rev-sh.base] = slot{int8(ph + 1), int32(i), int32(p.key)}
				expectRevs[p.key]++
			}
		}
	}
	phases := []*phaseResult{&res.Burst, &res.Paced}
	lat := [2][]int64{}
	last := [2]int64{}
	firstSent := [2]int64{math.MaxInt64, math.MaxInt64}
	for ph, ps := range [][]put{burst, paced} {
		pr := phases[ph]
		pr.Puts = len(ps)
		lastDone := int64(0)
		for _, p := range ps {
			if p.err != nil {
				pr.PutErrors++
				continue
			}
			firstSent[ph] = min(firstSent[ph], p.sent)
			lastDone = max(lastDone, p.done)
		}
		if lastDone > 0 {
			pr.PutSeconds = float64(lastDone-firstSent[ph]) / 1e9
		}
		lat[ph] = make([]int64, 0, res.Created*(pr.Puts-pr.PutErrors)/sh.keys)
	}
	res.CutReasons = map[string]int{}
	for _, s := range streams {
		n := len(s.keys)
		count := make([]int64, n)
		lastRev := make([]int32, n)
		for i := range lastRev {
			lastRev[i] = -1
		}
		dups := make([]int64, n)
		for _, r := range s.recs {
			w := r.w
			if int(r.r) >= len(slots) || slots[r.r].phase == 0 || int(slots[r.r].key) != s.first[w]%sh.keys {
				res.Foreign++
				continue
			}
			if r.r <= lastRev[w] {
				if r.r == lastRev[w] {
					dups[w]++
					res.Duplicates++
				} else {
					res.OutOfOrder++
				}
			} else {
				lastRev[w] = r.r
			}
			count[w]++
			sl := slots[r.r]
			ph := int(sl.phase - 1)
			p := burst
			if ph == 1 {
				p = paced
			}
			lat[ph] = append(lat[ph], r.t-p[sl.i].sent)
			last[ph] = max(last[ph], r.t)
		}
		if s.err != nil {
			res.StreamsFailed++
		}
		for li := range n {
			ok, c, serr := s.state(li)
			key := s.first[li] % sh.keys
			if ok {
				for ph := range phases {
					phases[ph].Expected += int64(okPuts[ph][key])
				}
			}
			switch {
			case !ok:
				res.CutReasons["not created"]++
				res.WatchersCut++
				continue
			case c != "":
				res.CutReasons["canceled: "+c]++
				res.WatchersCut++
				continue
			case serr != nil:
				st, _ := status.FromError(serr)
				reason := "stream error: " + st.Code().String() + ": " + st.Message()
				if errors.Is(serr, io.EOF) {
					reason = "stream closed by server (EOF)"
				}
				res.CutReasons[reason]++
				res.WatchersCut++
				continue
			}
			missing := int64(expectRevs[key]) - (count[li] - dups[li])
			if missing > 0 {
				res.WatchersShort++
				res.MissingEvents += missing
				if len(res.Examples) < 10 {
					res.Examples = append(res.Examples, missingExample(s, li, int32(key), expectRevs[key], slots, sh.base))
				}
			}
		}
	}
	for ph := range phases {
		pr := phases[ph]
		pr.Delivered = int64(len(lat[ph]))
		res.Delivered += pr.Delivered
		res.Expected += pr.Expected
		if pr.Delivered > 0 {
			pr.WallSeconds = float64(last[ph]-firstSent[ph]) / 1e9
			pr.EventsPerSec = float64(pr.Delivered) / pr.WallSeconds
			slices.Sort(lat[ph])
			pr.P50Ms = ms(pct(lat[ph], 0.50))
			pr.P99Ms = ms(pct(lat[ph], 0.99))
			pr.MaxMs = ms(lat[ph][len(lat[ph])-1])
		}
	}
	res.Foreign += sh.foreign.Load()
	res.NonEventResps = sh.notEvent.Load()
	if len(res.CutReasons) == 0 {
		res.CutReasons = nil
	}
}

func missingExample(s *stream, li int, key int32, expectRevs int, slots []slot, base int64) string {
	seen := make(map[int32]bool)
	for _, r := range s.recs {
		if int(r.w) == li {
			seen[r.r] = true
		}
	}
	var miss []int64
	for off, sl := range slots {
		if sl.phase != 0 && sl.key == key && !seen[int32(off)] {
			miss = append(miss, base+int64(off))
		}
	}
	shown := miss
	if len(shown) > 8 {
		shown = shown[:8]
	}
	return fmt.Sprintf("stream %d watcher %d (global %d): got %d distinct of %d, missing %d revisions, first %v",
		s.idx, li, s.first[li], len(seen), expectRevs, len(miss), shown)
}

func pct(sorted []int64, q float64) int64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func printHuman(w io.Writer, r *result) {
	fmt.Fprintf(w, "target %s: %d watchers on %d key(s) over %d conns, %d created in %.2fs (start rev %d)\n",
		r.Target, r.Watchers, r.Keys, r.Conns, r.Created, r.CreateSeconds, r.StartRevision)
	for _, x := range []struct {
		name string
		p    *phaseResult
	}{{"burst", &r.Burst}, {"paced", &r.Paced}} {
		p := x.p
		fmt.Fprintf(w, "  %s: %d puts (%d errors) in %.2fs; %d/%d events in %.2fs = %.0f events/s; p50 %.1f ms p99 %.1f ms max %.1f ms; timed out %v\n",
			x.name, p.Puts, p.PutErrors, p.PutSeconds, p.Delivered, p.Expected, p.WallSeconds, p.EventsPerSec, p.P50Ms, p.P99Ms, p.MaxMs, p.TimedOut)
	}
	fmt.Fprintf(w, "  delivered %d of %d; watchers cut %d (streams failed %d); watchers missing events %d (%d events); duplicates %d; out of order %d; foreign %d\n",
		r.Delivered, r.Expected, r.WatchersCut, r.StreamsFailed, r.WatchersShort, r.MissingEvents, r.Duplicates, r.OutOfOrder, r.Foreign)
	for k, v := range r.CutReasons {
		fmt.Fprintf(w, "  cut: %d x %s\n", v, k)
	}
	for _, e := range r.Examples {
		fmt.Fprintln(w, "  missing:", e)
	}
	fmt.Fprintf(w, "  wall %.2fs; client CPU %.2fs\n", r.WallSeconds, r.ClientCPUSecs)
}
