package sim

import (
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdproxy/etcdproxy/core/failover"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/watch"
)

func scenarioConfig() node.Config {
	return node.Config{
		Port:  port.Config{StreamBufferBytes: 1 << 20, RetryInterval: 100 * time.Millisecond},
		Watch: watch.Config{HistoryEvents: 8, FragmentBytes: 1 << 20, ProgressInterval: time.Second, RetryInterval: 100 * time.Millisecond},
	}
}

// finish settles the world, checks completeness and that nothing leaks, and
// fails on any violated guarantee.
func finish(t *testing.T, w *World) {
	t.Helper()
	w.Settle()
	w.CheckComplete()
	w.CloseAll()
	if len(w.Violations) > 0 {
		t.Fatalf("watch guarantee violated:\n  %s", strings.Join(w.Violations, "\n  "))
	}
}

func put(k string) Op { return Op{Key: k, Value: k} }

// watchOf returns the only watch created on a stream.
func watchOf(t *testing.T, w *World, id port.StreamID) *ClientWatch {
	t.Helper()
	for _, cw := range w.Clients[id].watches {
		return cw
	}
	t.Fatalf("stream %d has no watch", id)
	return nil
}

// etcd-io/etcd#15220: a progress notification overtook events of the same
// revision. Here the client asks for progress while an event waits
// upstream, and a group is created between etcd's progress answer and its
// delivery: the answer must follow the event and must not speak for the
// new group.
func TestScenarioProgressOvertakingEvents(t *testing.T) {
	w := NewWorld(scenarioConfig())
	s := w.Open()
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a")})
	w.AnswerFetch(0, false)
	w.Deliver(port.WatchShared, 10, ctrlFirst)
	w.Write(put("a"), put("b")) // revision 2
	w.RequestProgress(s)
	w.AnswerFetch(0, false)               // progress wanted at 2; upstream asked
	w.Up[port.WatchShared].Pump(1, false) // etcd: the event, then its progress answer
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("b"), StartRevision: 2})
	w.AnswerFetch(0, false) // a group for b opens from 2
	w.Deliver(port.WatchShared, 10, ctrlFirst)
	w.Read(s)
	finish(t, w)
}

// etcd-io/etcd#15271: a watch went back in time after a partition. The
// upstream stream breaks with events undelivered; the proxy reopens from
// where each group stood: nothing is repeated, nothing skipped.
func TestScenarioNoTimeTravelAfterPartition(t *testing.T) {
	w := NewWorld(scenarioConfig())
	s := w.Open()
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a"), PrevKv: true})
	w.AnswerFetch(0, false)
	for i := 0; i < 4; i++ {
		w.Write(put("a")) // 2..5
	}
	w.Pump(port.WatchShared, 1, false)
	w.Deliver(port.WatchShared, 2, ctrlFirst) // created, then the event at 2
	w.Pump(port.WatchShared, 3, false)
	w.Lose(port.WatchShared) // 3..5 were still on their way
	w.Read(s)
	finish(t, w)
	if cw := watchOf(t, w, s); cw.Got != 4 || cw.LastRev != 5 {
		t.Fatalf("watch got %d events up to %d, want 4 up to 5", cw.Got, cw.LastRev)
	}
}

// etcd-io/etcd#17529: events were lost when a stream was starved. A client
// stops reading past its buffer bound while writes go on; when it reads
// again it gets every event, from the window or a catch-up watch.
func TestScenarioStarvedStreamLosesNothing(t *testing.T) {
	cfg := scenarioConfig()
	cfg.Port.StreamBufferBytes, cfg.Watch.HistoryEvents = 200, 3
	w := NewWorld(cfg)
	slow, fast := w.Open(), w.Open()
	for _, s := range []port.StreamID{slow, fast} {
		w.Create(s, &pb.WatchCreateRequest{Key: []byte("a")})
		w.AnswerFetch(0, false)
	}
	w.Clients[slow].Reading = false
	for i := 0; i < 30; i++ {
		w.Write(Op{Key: "a", Value: strings.Repeat("v", 40)})
		w.Pump(port.WatchShared, 1, false)
		w.Deliver(port.WatchShared, 10, ctrlFirst)
		w.Read(fast)
	}
	if s := w.N.Stats(); s.Holds == 0 {
		t.Fatalf("the slow stream was never held back")
	}
	finish(t, w)
}

// etcd-io/etcd#18089 and #19179: events were dropped around compaction.
// The upstream stream breaks and etcd compacts exactly at the revision the
// group needs next: etcd compacts only revisions below that, so the
// watcher must get its events, not a compaction.
func TestScenarioCompactionAtTheNextRevision(t *testing.T) {
	w := NewWorld(scenarioConfig())
	s := w.Open()
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a")})
	w.AnswerFetch(0, false)
	for i := 0; i < 4; i++ {
		w.Write(put("a")) // 2..5
	}
	w.Pump(port.WatchShared, 3, false) // 1..3 (the group's upstream watch starts at 1, the revision at creation)
	w.Deliver(port.WatchShared, 10, ctrlFirst)
	w.Lose(port.WatchShared)
	w.Compact(4) // the group reopens from 4
	w.Read(s)
	finish(t, w)
	if cw := watchOf(t, w, s); cw.Ended || cw.LastRev != 5 {
		t.Fatalf("watch ended=%v at %d, want all events up to 5", cw.Ended, cw.LastRev)
	}
}

// etcd-io/etcd#20221: a watch on a future revision returned old events.
func TestScenarioFutureStartGetsNoOldEvents(t *testing.T) {
	w := NewWorld(scenarioConfig())
	s := w.Open()
	w.Write(put("a")) // 2
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 4})
	w.AnswerFetch(0, false)
	for i := 0; i < 3; i++ {
		w.Write(put("a")) // 3..5
	}
	finish(t, w)
	if cw := watchOf(t, w, s); cw.Got != 2 {
		t.Fatalf("watch from 4 got %d events, want 2 (4 and 5)", cw.Got)
	}
}

// A group's upstream watch is compacted while one of its watchers starts
// in the future (which survives the compaction): the group reopens for it,
// and its upstream watch must not start past etcd's revision, or etcd, which
// counts such a watch as unsynced, answers no progress request on the shared
// stream while nothing is written: a progress request for another group's
// watcher would wait for ever. (Found as "a progress request on an idle
// cluster is still unanswered" in the rapid schedules.)
func TestScenarioFutureWatcherSurvivesCompaction(t *testing.T) {
	w := NewWorld(scenarioConfig())
	s := w.Open()
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 4}) // the store is at 1
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("b")})
	w.answerFetches()
	w.Write(put("c")) // 2
	w.Compact(2)      // both groups' upstream watches (from 1) are compacted
	w.Pump(port.WatchShared, 1<<30, false)
	w.Deliver(port.WatchShared, 1<<30, ctrlFirst)
	w.Read(s)
	w.RequestProgress(s) // at 2: the watch on b needs etcd's progress answer
	for range 50 {
		runFor(w, 100*time.Millisecond)
		if len(w.Clients[s].progress) == 0 {
			break
		}
	}
	if n := len(w.Clients[s].progress); n != 0 {
		t.Fatalf("a progress request on an idle cluster is still unanswered after 5 s (shared upstream watches: %v)", w.Up[port.WatchShared].IDs())
	}
	w.Write(put("a"), put("b")) // 3
	w.Write(put("a"))           // 4
	finish(t, w)
	for _, cw := range w.Clients[s].watches {
		if want := map[string]int{"a": 1, "b": 1}[string(cw.Req.Key)]; cw.Ended || cw.Got != want {
			t.Fatalf("watch %v got %d events (ended %v), want %d", cw.Req, cw.Got, cw.Ended, want)
		}
	}
}

// etcd's proxy, etcd-io/etcd#21813: a group whose upstream watch had died
// kept accepting new watchers that then never got an event. Here etcd
// ends the group's watch; its watcher gets etcd's reason, and a watcher
// created afterwards gets a working upstream watch.
func TestScenarioDeadGroupIsNotReused(t *testing.T) {
	w := NewWorld(scenarioConfig())
	s := w.Open()
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a")})
	w.AnswerFetch(0, false)
	w.Deliver(port.WatchShared, 10, ctrlFirst)
	id := w.Up[port.WatchShared].IDs()[0]
	w.Up[port.WatchShared].Kill(id, "etcdserver: no leader")
	w.Deliver(port.WatchShared, 10, ctrlFirst)
	w.Read(s)
	first := watchOf(t, w, s)
	if !first.Ended {
		t.Fatalf("the watcher of the dead group was not ended")
	}
	s2 := w.Open()
	w.Create(s2, &pb.WatchCreateRequest{Key: []byte("a")})
	w.AnswerFetch(0, false)
	w.Write(put("a"))
	finish(t, w)
	if cw := watchOf(t, w, s2); cw.Got != 1 {
		t.Fatalf("a watcher created after the group died got %d events, want 1", cw.Got)
	}
}

// etcd's proxy, PR etcd-io/etcd#21881: after etcd restarted, the re-created
// upstream watch's `created` reached clients a second time and they bound
// later events to the wrong watch. The model fails on any created response
// without a create pending, and on events of one watch reaching another.
func TestScenarioNoSecondCreatedAfterRestart(t *testing.T) {
	w := NewWorld(scenarioConfig())
	s := w.Open()
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a")})
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("b")})
	w.AnswerFetch(0, false)
	w.AnswerFetch(0, false)
	w.Write(put("a"), put("b"))
	w.Lose(port.WatchShared)
	w.Lose(port.WatchShared)
	w.Write(put("b"))
	finish(t, w)
}

// etcd's proxy, etcd-io/etcd#10650: after a compaction and a proxy restart,
// re-created client watches never received events again. A fresh machine
// (the restarted proxy) over a compacted store serves a watch resuming
// after the compaction point.
func TestScenarioWatchAfterCompactionAndRestart(t *testing.T) {
	w := NewWorld(scenarioConfig())
	for i := 0; i < 5; i++ {
		w.Write(put("a")) // 2..6
	}
	w.Compact(6)
	s := w.Open()
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 7})
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a")})
	w.AnswerFetch(0, false)
	w.AnswerFetch(0, false)
	w.Write(put("a")) // 7
	finish(t, w)
	for _, cw := range w.Clients[s].watches {
		if cw.Got != 1 || cw.Ended {
			t.Fatalf("watch %v got %d events (ended %v), want the write at 7", cw.Req, cw.Got, cw.Ended)
		}
	}
}

// ctrlFirst takes etcd's control queue (created, cancelled) first whenever
// both of its queues hold something.
func ctrlFirst() bool { return true }

// memberConfig is scenarioConfig with three members to fail over between.
func memberConfig() node.Config {
	cfg := scenarioConfig()
	cfg.Members = Members(3)
	cfg.Failover = failover.Config{Timeout: time.Second}
	return cfg
}

// runFor advances time in 100 ms ticks, everything else settled between.
func runFor(w *World, d time.Duration) {
	for end := w.Clock.Now().Add(d); w.Clock.Now().Before(end); {
		w.Tick(100 * time.Millisecond)
		for u := range port.NumWatchUpstreams {
			w.Pump(u, 1<<30, false)
			w.Deliver(u, 1<<30, ctrlFirst)
		}
		for len(w.fetches) > 0 {
			w.AnswerFetch(0, false)
		}
		for _, id := range w.clientIDs() {
			w.Read(id)
		}
	}
}

// testMemberFault: the member in use fails with f while writes go on; the
// node must move within the bound, and the watch resume there with every
// event once.
func testMemberFault(t *testing.T, f MemberFault, bound time.Duration) {
	w := NewWorld(memberConfig())
	s := w.Open()
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a"), PrevKv: true})
	runFor(w, time.Second)
	first := w.InUse()
	if first == nil || first.Name != "m0" {
		t.Fatalf("in use at start: %v", first)
	}
	w.Write(put("a")) // 2
	runFor(w, 500*time.Millisecond)
	w.Fail(first, f)
	failedAt := w.Clock.Now()
	for i := 0; i < 5; i++ {
		w.Write(put("a")) // 3..7: the member in use never serves them
		runFor(w, 100*time.Millisecond)
	}
	for w.InUse() == first && w.Clock.Now().Sub(failedAt) < 10*time.Second {
		runFor(w, 100*time.Millisecond)
	}
	if took := w.Clock.Now().Sub(failedAt); w.InUse() == first || took > bound {
		t.Fatalf("member %s went %v: still in use after %v (bound %v)", first.Name, f, took, bound)
	}
	w.Heal(first)
	runFor(w, 10*time.Second)
	finish(t, w)
	if cw := watchOf(t, w, s); cw.Got != 6 || cw.LastRev != 7 {
		t.Fatalf("watch got %d events up to %d, want 6 up to 7", cw.Got, cw.LastRev)
	}
	if w.InUse() == first {
		t.Fatalf("moved back to %s once it healed", first.Name)
	}
}

// The member in use stops answering, and nothing breaks.
func TestScenarioSilentMember(t *testing.T) {
	testMemberFault(t, Silent, 1300*time.Millisecond)
}

// The member in use stops applying while the cluster moves on. Its lag
// counts from when a probe of another member first saw the cluster past it
// (the next probe after the first write), so the bound is a probe interval
// longer.
func TestScenarioMemberBehind(t *testing.T) { testMemberFault(t, Behind, 1600*time.Millisecond) }

// The member in use loses its leader.
func TestScenarioLeaderlessMember(t *testing.T) {
	testMemberFault(t, Leaderless, 1300*time.Millisecond)
}

// A rewound group's upstream watch has passed where the window began but
// not yet its head: the watcher that asked for the rewind is still being
// brought the window's events by it when the stream breaks. The group
// must go on from where its upstream watch stood, not from the window's
// head (found by bench/soak: such watchers lost every event up to the
// failover).
func TestScenarioLostAfterRewindBeforeHead(t *testing.T) {
	cfg := scenarioConfig()
	cfg.Watch.HistoryEvents = 4
	w := NewWorld(cfg)
	live := w.Open()
	w.Create(live, &pb.WatchCreateRequest{Key: []byte("a")})
	w.AnswerFetch(0, false)
	for range 10 {
		w.Write(put("a")) // 2..11, one batch each: the window keeps 8..11
		w.Pump(port.WatchShared, 1, false)
		w.Deliver(port.WatchShared, 100, ctrlFirst)
	}
	w.Read(live)
	late := w.Open()
	w.Create(late, &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 2}) // before the window (8..11)
	w.AnswerFetch(0, false)
	w.Deliver(port.WatchShared, 100, ctrlFirst) // the rewound watch's created
	w.Pump(port.WatchShared, 7, false)          // 2..8: past the window's start, short of its head
	w.Deliver(port.WatchShared, 100, ctrlFirst)
	w.Read(late)
	w.Lose(port.WatchShared)
	w.Write(put("a")) // 12
	finish(t, w)
	if cw := watchOf(t, w, late); cw.Got != 11 || cw.LastRev != 12 {
		t.Fatalf("the late watch got %d events up to %d, want 11 up to 12", cw.Got, cw.LastRev)
	}
}

// A watcher with a token that wants progress notifications joins a group
// whose upstream watch starts past etcd's revision: the group's watch is
// pulled back one revision (reopened), and the create is answered only once
// etcd has accepted the reopened watch. A permission revoked in between
// refuses the create, as etcd refuses a direct one, instead of ending a
// watch the client was told etcd had created. (Found by the rapid
// schedules, with the pull-back made as the watcher joined.)
func TestScenarioTokenNotifyWatcherJoinsFutureGroup(t *testing.T) {
	w := NewWorld(scenarioConfig())
	s := w.OpenWithToken("t1")
	lane := func() port.UpstreamID { return port.LaneOf(w.laneOf("t1")).Shared }
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a")}) // its group starts past etcd's revision
	w.answerFetches()
	w.Deliver(lane(), 1<<30, ctrlFirst)
	w.Read(s)
	w.Create(s, &pb.WatchCreateRequest{Key: []byte("a"), ProgressNotify: true})
	w.answerFetches()
	w.SetRevoked("t1", true)
	w.Deliver(lane(), 1<<30, ctrlFirst)
	w.Read(s)
	finish(t, w)
	if n := w.N.Stats().Watch.PulledBack; n != 1 {
		t.Fatalf("groups pulled back: %d, want 1", n)
	}
}
