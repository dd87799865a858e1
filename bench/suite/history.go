package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/etcdproxy/etcdproxy/bench/internal/child"
	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
)

// The history section: watchers joining at past revisions, as Kubernetes
// informers do when they re-watch from the revision of their last list
// (after a restart of theirs or of the proxy). Once, before the first
// target, -history-revisions puts of one key (128-byte values) are
// written directly on etcd. Then, through each target (fresh, so that no
// proxy has any of it cached), -history-watchers watches of that key over
// -history-conns connections (one stream each) are created, all streams
// at once, each stream's creates one after another as clientv3 sends them
// (the next once the last is answered: the only order of created
// responses a client can rely on), the i-th starting at the (i·revisions/watchers)-th revision of the history:
// start revisions spread evenly from the first write to the last, so each
// watcher must get the history from its own start to the head, then has
// nothing more to wait for (nothing writes the key meanwhile). Per target:
// the time until every watcher has its last event, events a second over
// it, each watcher's catch-up time (create sent to last event) at p50 and
// p99, the target's and etcd's CPU, the target's peak RSS, and every
// event missed, repeated, out of order or not of the history, every watch
// canceled or not created (checked against the exact revisions written).
// The ceiling is the watch ceiling (watchceiling.go): one upstream watch
// per distinct start revision, so etcd does every catch-up itself and the
// ceiling relays it. It bounds what a bare relay costs, not what a proxy
// that serves late joiners from a history of its own (as etcdproxy does)
// can save: with a distinct start revision per watcher, such a proxy can
// beat it.

var historyRevisions, historyWatchers, historyConns int

// historyRevs are the revisions of the history's writes, ascending.
var historyRevs []int64

const historyKey = "suite/history/key"

func init() {
	register(&section{
		name:    "history",
		ceiling: "watch",
		flags: func(fs *flag.FlagSet) {
			fs.IntVar(&historyRevisions, "history-revisions", 1000, "history: revisions of the key written before the watchers join")
			fs.IntVar(&historyWatchers, "history-watchers", 1000, "history: watchers joining at past revisions")
			fs.IntVar(&historyConns, "history-conns", 100, "history: connections (one watch stream each) the watchers are spread over")
		},
		quick: map[string]string{"history-revisions": "500", "history-watchers": "500"},
		check: func(options) error {
			if historyRevisions < 1 || historyWatchers < 1 || historyConns < 1 {
				return errors.New("-history-revisions, -history-watchers and -history-conns must be positive")
			}
			return nil
		},
		prepare: writeHistory,
		each:    runHistory,
		about: func(options) string {
			return fmt.Sprintf("%d revisions of one key written directly on etcd, then %d watchers over %d connections created at once through the fresh target, start revisions spread evenly over the history (informers re-watching from their last list); each must get exactly the history from its start to the head. Catch-up: from a watcher's create sent to its last event. The ceiling is the watch ceiling: one upstream watch per distinct start revision (here per watcher), etcd doing every catch-up, so a proxy serving joiners from a history of its own can beat it",
				historyRevisions, historyWatchers, historyConns)
		},
	})
}

// writeHistory writes the history's revisions directly on etcd.
func writeHistory(ctx context.Context, _ options, etcd *grpc.ClientConn) error {
	kv := pb.NewKVClient(etcd)
	value := make([]byte, 128)
	historyRevs = historyRevs[:0]
	for i := range historyRevisions {
		value[0] = byte(i)
		r, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(historyKey), Value: value})
		if err != nil {
			return err
		}
		historyRevs = append(historyRevs, r.Header.Revision)
	}
	return nil
}

// historyWatcher is one watcher's progress, written by its stream's
// receiving goroutine only.
type historyWatcher struct {
	first   int // index in historyRevs of its start revision
	next    int // index of the next revision it must get
	last    int64
	sent    time.Time // create sent
	done    time.Time // last event received
	missed  int
	repeats int
	reorder int
	foreign int
	cut     string // canceled or refused, and why
}

type historyStream struct {
	st       pb.Watch_WatchClient
	watchers []*historyWatcher // in create order
	byID     map[int64]*historyWatcher
	created  int
	answered chan struct{} // a create was answered
	err      error
	ended    chan struct{}
}

func runHistory(ctx context.Context, o options, res *results, t target, etcd member) error {
	revIdx := make(map[int64]int, len(historyRevs))
	for i, r := range historyRevs {
		revIdx[r] = i
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	streams := make([]*historyStream, historyConns)
	for c := range streams {
		conn, err := probe.Dial(t.endpoint)
		if err != nil {
			return err
		}
		defer conn.Close()
		st, err := pb.NewWatchClient(conn).Watch(ctx)
		if err != nil {
			return err
		}
		streams[c] = &historyStream{st: st, byID: map[int64]*historyWatcher{}, ended: make(chan struct{}), answered: make(chan struct{}, 1)}
	}
	var expected int64
	for i := range historyWatchers {
		w := &historyWatcher{first: i * len(historyRevs) / historyWatchers}
		w.next, w.last = w.first, -1
		expected += int64(len(historyRevs) - w.first)
		s := streams[i%len(streams)]
		s.watchers = append(s.watchers, w)
	}
	var (
		pending  atomic.Int64
		received atomic.Int64
		allDone  = make(chan struct{})
		doneOnce sync.Once
	)
	pending.Store(int64(historyWatchers))
	finish := func() {
		if pending.Add(-1) == 0 {
			doneOnce.Do(func() { close(allDone) })
		}
	}
	for _, s := range streams {
		go s.receive(revIdx, &received, finish)
	}

	proc := t.cpuProc(etcd)
	_ = child.ResetPeak(proc.PID())
	cpu0, _ := child.CPUSeconds(proc.PID())
	etcd0, _ := child.CPUSeconds(etcd.proc.PID())
	began := time.Now()
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, w := range s.watchers {
				w.sent = time.Now()
				err := s.st.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{
					CreateRequest: &pb.WatchCreateRequest{Key: []byte(historyKey), StartRevision: historyRevs[w.first]}}})
				if err != nil {
					return
				}
				select {
				case <-s.answered:
				case <-s.ended:
					return
				case <-time.After(time.Minute):
					return
				}
			}
		}()
	}
	timedOut := false
	select {
	case <-allDone:
	case <-time.After(2 * time.Minute):
		timedOut = true
	}
	wg.Wait()
	took := time.Since(began)
	cpu1, _ := child.CPUSeconds(proc.PID())
	etcd1, _ := child.CPUSeconds(etcd.proc.PID())
	_, peakKB, _ := child.Memory(proc.PID())
	cancel()
	for _, s := range streams {
		<-s.ended
	}

	var catchUp []time.Duration
	var missed, repeats, reorder, foreign, cut int
	for _, s := range streams {
		for i, w := range s.watchers {
			switch {
			case i >= s.created:
				cut++ // never created
			case w.cut != "":
				cut++
			case w.next < len(historyRevs):
				w.missed += len(historyRevs) - w.next
			default:
				catchUp = append(catchUp, w.done.Sub(w.sent))
			}
			missed, repeats, reorder, foreign = missed+w.missed, repeats+w.repeats, reorder+w.reorder, foreign+w.foreign
		}
	}
	bad := missed + repeats + reorder + foreign + cut
	if timedOut {
		bad = max(bad, 1)
	}
	n := received.Load()
	sec := fmt.Sprintf("history, %d watchers joining over %d revisions", historyWatchers, len(historyRevs))
	child.Logf("%s through %s: %d events (%d expected) in %v; missed %d, repeated %d, out of order %d, foreign %d, watchers cut %d",
		sec, t.name, n, expected, took.Round(time.Millisecond), missed, repeats, reorder, foreign, cut)
	res.set(sec, "all caught up in s", "%.2f", false, t.name, took.Seconds())
	res.set(sec, "events/s", "%.0f", true, t.name, float64(n)/took.Seconds())
	if len(catchUp) > 0 {
		slices.Sort(catchUp)
		res.set(sec, "catch-up per watcher p50 ms", "%.0f", false, t.name, ms(catchUp[len(catchUp)/2]))
		res.set(sec, "catch-up per watcher p99 ms", "%.0f", false, t.name, ms(catchUp[min(len(catchUp)-1, len(catchUp)*99/100)]))
	}
	res.set(sec, "target CPU s", "%.2f", false, t.name, cpu1-cpu0)
	res.set(sec, "etcd CPU s", "%.2f", false, t.name, etcd1-etcd0)
	res.set(sec, "target peak RSS MiB", "%.0f", false, t.name, float64(peakKB)/1024)
	res.set(sec, "events missed, repeated, out of order or foreign, watchers cut", "%.0f", false, t.name, float64(bad))
	return nil
}

// receive checks every response of the stream against the history, until
// the stream ends.
func (s *historyStream) receive(revIdx map[int64]int, received *atomic.Int64, finish func()) {
	defer close(s.ended)
	for {
		r, err := s.st.Recv()
		if err != nil {
			s.err = err
			return
		}
		if r.Created {
			if s.created < len(s.watchers) {
				w := s.watchers[s.created]
				s.byID[r.WatchId] = w
				if r.Canceled {
					w.cut = "create refused: " + r.CancelReason
					finish()
				}
			}
			s.created++
			s.answered <- struct{}{}
			if len(r.Events) == 0 {
				continue
			}
		}
		w := s.byID[r.WatchId]
		if w == nil {
			continue
		}
		if r.Canceled && w.cut == "" {
			w.cut = "canceled: " + r.CancelReason
			if w.next < len(historyRevs) {
				finish()
			}
		}
		received.Add(int64(len(r.Events)))
		for _, ev := range r.Events {
			rev := ev.Kv.ModRevision
			i, ok := revIdx[rev]
			switch {
			case !ok || i < w.first:
				w.foreign++
			case rev == w.last:
				w.repeats++
			case rev < w.last:
				w.reorder++
			default:
				w.missed += i - w.next
				w.next, w.last = i+1, rev
				if w.next == len(historyRevs) && w.cut == "" {
					w.done = time.Now()
					finish()
				}
			}
		}
	}
}
