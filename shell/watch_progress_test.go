package shell_test

import (
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/internal/testutil"
	"github.com/etcdproxy/etcdproxy/shell"
)

// TestRequestProgressLikeKubernetes drives the consistent-read-from-cache
// pattern of kube-apiserver: read the current revision R, then ask the
// watch stream for progress until it reports a revision >= R. Through the
// proxy, the answer must come (etcd's own proxy drops these requests,
// etcd-io/etcd#19710), carry a revision >= R, and follow every event up
// to R on that stream.
func TestRequestProgressLikeKubernetes(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, nil)
	ctx := testutil.Context(t, 30*time.Second)
	cc := testutil.Dial(t, p.Addr())
	kv := pb.NewKVClient(cc)
	st, err := pb.NewWatchClient(cc).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"pods/a", "nodes/a"} {
		end := []byte(k[:strings.Index(k, "/")] + "0")
		if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte(k[:strings.Index(k, "/")+1]), RangeEnd: end, ProgressNotify: true}}}); err != nil {
			t.Fatal(err)
		}
	}
	for created := 0; created < 2; {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.Created {
			created++
		}
	}
	// Writes on one watched range only, and on an unwatched key: the other
	// watcher's progress must still reach R.
	var last int64
	for _, k := range []string{"pods/a", "pods/b", "other"} {
		r, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(k), Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Header.Revision
	}
	rr, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	want := rr.Header.Revision
	if want != last {
		t.Fatalf("current revision %d, last write %d", want, last)
	}
	if err := st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
		t.Fatal(err)
	}
	var events []int64
	for {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("no progress response: %v (events so far %v)", err, events)
		}
		for _, ev := range r.Events {
			events = append(events, ev.Kv.ModRevision)
		}
		if r.WatchId == -1 && len(r.Events) == 0 {
			if r.Header.Revision < want {
				t.Fatalf("progress at %d, before the revision %d read before the request", r.Header.Revision, want)
			}
			break
		}
	}
	if len(events) != 2 {
		t.Errorf("events before the progress response: %v, want the two writes under pods/", events)
	}
}

// TestHeldWatcherCompactedMeanwhile: a client that stops reading falls
// behind; etcd compacts past its place; when it reads again it gets every
// event the window still had, in order, and then etcd's compaction response,
// never a gap passed over in silence.
func TestHeldWatcherCompactedMeanwhile(t *testing.T) {
	m := testutil.StartMember(t)
	p := testutil.StartProxy(t, []string{m.ClientURL}, func(c *shell.Config) {
		c.WatchStreamBufferBytes = 16 << 10
		c.WatchHistoryEvents = 10
	})
	ctx := testutil.Context(t, 60*time.Second)
	slow := openSlowWatch(t, ctx, p.Addr(), "k")
	kv := pb.NewKVClient(testutil.Dial(t, m.ClientURL))
	value := make([]byte, 2048)
	var last int64
	for i := 0; i < 200; i++ {
		r, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: value})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Header.Revision
	}
	// Behind for certain: writes made while the stream stays held (no hold
	// ended and began again meanwhile) cannot have reached it. A hold can
	// be brief while gRPC still has room for the stream's queue, and the
	// catch-up after it may bring the watcher every event so far in one
	// upstream response; the client reads nothing, so gRPC fills and the
	// stream stays held.
	for attempt := 0; ; attempt++ {
		testutil.WaitUntil(t, 10*time.Second, "the slow stream is held", func() bool { _, g := p.CoreState(); return g.Flow.HeldStreams > 0 })
		before, _ := p.CoreState()
		for i := 0; i < 20; i++ {
			r, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: value})
			if err != nil {
				t.Fatal(err)
			}
			last = r.Header.Revision
		}
		if after, g := p.CoreState(); g.Flow.HeldStreams > 0 && after.Holds == before.Holds {
			break
		}
		if attempt == 10 {
			t.Fatal("the slow stream was never held through 20 writes while its client read nothing")
		}
	}
	if _, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: last, Physical: true}); err != nil {
		t.Fatal(err)
	}

	var revs []int64
	var end *pb.WatchResponse
	for end == nil {
		r, err := slow.Recv()
		if err != nil {
			t.Fatalf("after %d events: %v", len(revs), err)
		}
		for _, ev := range r.Events {
			revs = append(revs, ev.Kv.ModRevision)
		}
		if r.Canceled {
			end = r
		} else if len(revs) > 0 && revs[len(revs)-1] >= last {
			// Caught up before the compaction: no cancel will come.
			t.Fatalf("the slow client was given every event up to %d (%d events): it was not behind at the compaction", last, len(revs))
		}
	}
	for i := 1; i < len(revs); i++ {
		if revs[i] != revs[i-1]+1 {
			t.Fatalf("gap or repeat in delivered events: %d after %d", revs[i], revs[i-1])
		}
	}
	if len(revs) > 0 && revs[0] != 2 {
		t.Fatalf("first event at %d, want 2", revs[0])
	}
	next := int64(2)
	if len(revs) > 0 {
		next = revs[len(revs)-1] + 1
	}
	if next >= last {
		t.Fatalf("the slow client was given everything before the compaction (%d events): nothing to compact away", len(revs))
	}
	if end.CompactRevision != last {
		t.Fatalf("ended with %+v after %d events, want a compaction at %d", end, len(revs), last)
	}
	t.Logf("slow client got revisions 2..%d, then compaction at %d", next-1, end.CompactRevision)
}
