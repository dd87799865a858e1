package shell_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/internal/embedetcd"
	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// watchLog reads a raw watch stream and keeps what arrives, per watch ID.
type watchLog struct {
	st   grpc.BidiStreamingClient[pb.WatchRequest, pb.WatchResponse]
	byID map[int64][]string
	// for the atomicity check
	lastRev    map[int64]int64
	inFragment map[int64]bool
	violations []string
	resps      chan *pb.WatchResponse
	broken     chan error
	// progressAsked counts progress requests sent and not answered yet;
	// their answers are recorded under watch ID -1.
	progressAsked int
}

func openWatchLog(t *testing.T, ctx context.Context, cc *grpc.ClientConn) *watchLog {
	t.Helper()
	st, err := pb.NewWatchClient(cc).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := &watchLog{st: st, byID: map[int64][]string{}, lastRev: map[int64]int64{}, inFragment: map[int64]bool{}, resps: make(chan *pb.WatchResponse, 1024), broken: make(chan error, 1)}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				l.broken <- err
				return
			}
			l.resps <- r
		}
	}()
	return l
}

// describe renders a response as lines: one for a created, cancel or
// compaction response, one per event otherwise. How events are batched into
// responses is not rendered: etcd batches a catching-up watcher's events
// and sends a synced watcher's one revision at a time, so batching differs
// with timing; atomicity is checked separately (see record).
func describe(r *pb.WatchResponse) []string {
	var lines []string
	if r.Created || r.Canceled || r.CompactRevision != 0 || len(r.Events) == 0 {
		lines = append(lines, describeControl(r))
	}
	short := func(v []byte) string {
		if len(v) > 8 {
			return fmt.Sprintf("%s..(%d bytes)", v[:4], len(v))
		}
		return string(v)
	}
	for _, ev := range r.Events {
		line := fmt.Sprintf("%s:%s=%s@%d", ev.Type, ev.Kv.Key, short(ev.Kv.Value), ev.Kv.ModRevision)
		if ev.PrevKv != nil {
			line += fmt.Sprintf("(prev=%s@%d)", short(ev.PrevKv.Value), ev.PrevKv.ModRevision)
		}
		lines = append(lines, line)
	}
	return lines
}

func describeControl(r *pb.WatchResponse) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev=%d", r.Header.GetRevision())
	if r.Created {
		b.WriteString(" created")
	}
	if r.Canceled {
		fmt.Fprintf(&b, " canceled(%q)", r.CancelReason)
	}
	if r.CompactRevision != 0 {
		fmt.Fprintf(&b, " compact=%d", r.CompactRevision)
	}
	if r.Fragment {
		b.WriteString(" fragment")
	}
	return b.String()
}

// create sends a create request and waits for its created response, so
// that watches are created at a known point of the write sequence.
func (l *watchLog) create(t *testing.T, ctx context.Context, cr *pb.WatchCreateRequest) {
	t.Helper()
	if err := l.st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: cr}}); err != nil {
		t.Fatal(err)
	}
	for {
		r := l.next(t, ctx)
		if r.Created {
			return
		}
	}
}

// record keeps a response under its watch ID. Progress answers are kept
// only for the requests progress made: etcd drops progress requests while
// a watcher is unsynced, so a script asks only where every watcher is
// synced.
//
// It also checks atomicity: a revision's events never straddle two
// responses, except within one fragment sequence.
func (l *watchLog) record(r *pb.WatchResponse) {
	if r.WatchId == -1 && !r.Created {
		if l.progressAsked > 0 {
			l.progressAsked--
			l.byID[-1] = append(l.byID[-1], fmt.Sprintf("progress rev=%d", r.Header.GetRevision()))
		}
		return
	}
	if len(r.Events) > 0 {
		first := r.Events[0].Kv.ModRevision
		if last, ok := l.lastRev[r.WatchId]; ok && first <= last && !l.inFragment[r.WatchId] {
			l.violations = append(l.violations, fmt.Sprintf("watch %d: revision %d after a response that ended at %d", r.WatchId, first, last))
		}
		l.lastRev[r.WatchId] = r.Events[len(r.Events)-1].Kv.ModRevision
	}
	l.inFragment[r.WatchId] = r.Fragment
	l.byID[r.WatchId] = append(l.byID[r.WatchId], describe(r)...)
}

func (l *watchLog) next(t *testing.T, ctx context.Context) *pb.WatchResponse {
	t.Helper()
	select {
	case r := <-l.resps:
		l.record(r)
		return r
	case err := <-l.broken:
		t.Fatalf("watch stream broke: %v", err)
	case <-ctx.Done():
		t.Fatalf("no watch response in time; so far %v", l.byID)
	}
	return nil
}

// waitFor reads until each listed watch has been given an event at or past
// its revision, so that the script moves on at the same point on both
// targets.
func (l *watchLog) waitFor(t *testing.T, ctx context.Context, want map[int64]int64) {
	t.Helper()
	seen := map[int64]int64{}
	done := func() bool {
		for id, rev := range want {
			if seen[id] < rev {
				return false
			}
		}
		return true
	}
	for !done() {
		r := l.next(t, ctx)
		for _, ev := range r.Events {
			seen[r.WatchId] = max(seen[r.WatchId], ev.Kv.ModRevision)
		}
	}
}

// progress asks for progress and waits for the answer, at a point of the
// script where every watcher is synced (etcd answers nothing otherwise).
func (l *watchLog) progress(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := l.st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
		t.Fatal(err)
	}
	l.progressAsked++
	for l.progressAsked > 0 {
		l.next(t, ctx)
	}
}

func (l *watchLog) cancel(t *testing.T, id int64) {
	t.Helper()
	if err := l.st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}); err != nil {
		t.Fatal(err)
	}
}

func (l *watchLog) String() string {
	var ids []int64
	for id := range l.byID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "watch %d:\n", id)
		for _, s := range l.byID[id] {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return b.String()
}

// TestWatchParityWithDirectEtcd runs one script of writes and watch requests
// against an etcd member directly and against a second, identical member
// through the proxy, and requires the same responses on every watch: created
// and cancel revisions, events with prev_kv and filters, fragments,
// historical, current and future start revisions, compaction and the cancel
// of a compacted watch, duplicate and invalid requests, and progress
// requests where every watcher is synced.
func TestWatchParityWithDirectEtcd(t *testing.T) {
	// A small request limit, on etcd and on the proxy alike, so that a
	// transaction's events come in fragments.
	const limit = 4096
	small := embedetcd.Options{NoFsync: true, Configure: func(c *embed.Config) { c.MaxRequestBytes = limit }}
	direct, behind := testutil.StartMemberWith(t, small), testutil.StartMemberWith(t, small)
	p := testutil.StartProxy(t, []string{behind.ClientURL}, func(c *shell.Config) { c.MaxSendBytes = limit })
	run := func(cc *grpc.ClientConn) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		kv := pb.NewKVClient(cc)
		put := func(k, v string) {
			if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte(v)}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 1; i <= 5; i++ {
			put(fmt.Sprintf("k%d", i), "a") // revisions 2..6
		}
		l := openWatchLog(t, ctx, cc)
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l"), StartRevision: 3, PrevKv: true})
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k1")})
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l"), Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}})
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte("l"), WatchId: 100, Fragment: true, PrevKv: true})
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k"), WatchId: 100})
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")})
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k3"), StartRevision: -1})
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k"), RangeEnd: []byte{0}, StartRevision: 1})
		put("k1", "b") // 7
		if _, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: []byte("k2")}); err != nil {
			t.Fatal(err)
		}
		big := strings.Repeat("x", 1000)
		for _, k := range []string{"k3", "k4", "k5"} {
			put(k, big) // 9, 10, 11
		}
		if _, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{opPut("k3", big), opPut("k4", big), opPut("k5", big)}}); err != nil {
			t.Fatal(err)
		}
		l.waitFor(t, ctx, map[int64]int64{0: 12, 1: 7, 2: 8, 3: 12, 100: 12})
		l.progress(t, ctx)
		l.cancel(t, 0)
		for r := l.next(t, ctx); !r.Canceled; r = l.next(t, ctx) {
		}
		if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 8, Physical: true}); err != nil {
			t.Fatal(err)
		}
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k1"), StartRevision: 4})
		l.next(t, ctx) // the compaction answer
		// etcd keeps a compacted watch's ID until the client cancels it,
		// and confirms the cancel; meanwhile it answers no progress request.
		l.cancel(t, 4)
		for r := l.next(t, ctx); !r.Canceled; r = l.next(t, ctx) {
		}
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k1"), StartRevision: 15})
		l.create(t, ctx, &pb.WatchCreateRequest{Key: []byte("k1"), StartRevision: 8, PrevKv: true})
		put("k1", "c") // 13
		put("k1", "d") // 14
		put("k1", "e") // 15
		l.waitFor(t, ctx, map[int64]int64{1: 15, 3: 15, 100: 15, 5: 15, 6: 15})
		l.progress(t, ctx)
		for _, v := range l.violations {
			t.Errorf("%s", v)
		}
		return l.String()
	}
	want := run(testutil.Dial(t, direct.ClientURL))
	got := run(testutil.Dial(t, p.Addr()))
	if got != want {
		t.Errorf("watch responses through the proxy differ from direct etcd\n--- proxy:\n%s--- direct:\n%s", got, want)
	}
	t.Logf("direct etcd:\n%s", want)
}
