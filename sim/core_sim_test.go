package sim

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/etcdproxy/etcdproxy/core/cache"
	"github.com/etcdproxy/etcdproxy/core/failover"
	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
	"github.com/etcdproxy/etcdproxy/core/watch"
)

// TestMain sets the default number of schedules: SIM_CHECKS, or 2000 when
// neither it nor -rapid.checks is given.
func TestMain(m *testing.M) {
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["rapid.checks"] {
		n := 2000
		if v, err := strconv.Atoi(os.Getenv("SIM_CHECKS")); err == nil && v > 0 {
			n = v
		}
		_ = flag.Set("rapid.checks", strconv.Itoa(n))
	}
	if !set["rapid.steps"] {
		_ = flag.Set("rapid.steps", "150")
	}
	os.Exit(m.Run())
}

var keys = []string{"a", "b", "c", "d", "e"}

// drawRange draws a watch range: a single key, a range, a prefix, or
// everything.
func drawRange(t *rapid.T) (key, end []byte) {
	switch rapid.IntRange(0, 5).Draw(t, "range kind") {
	case 0, 1:
		return []byte(rapid.SampledFrom(keys).Draw(t, "key")), nil
	case 2:
		return []byte("b"), []byte("d")
	case 3:
		return []byte("c"), []byte{0}
	case 4:
		return nil, []byte{0}
	default:
		// Every key, as clientv3's WithPrefix("") and the read cache's
		// subscription ask for it.
		return []byte{0}, []byte{0}
	}
}

// drawOps draws one transaction: up to three keys put (values of random
// size, so that some responses are large) or deleted.
func drawOps(t *rapid.T, w *World) []Op {
	n := rapid.IntRange(1, 3).Draw(t, "ops")
	var ops []Op
	seen := map[string]bool{}
	for i := 0; i < n; i++ {
		k := rapid.SampledFrom(keys).Draw(t, "write key")
		if seen[k] {
			continue
		}
		seen[k] = true
		v := fmt.Sprint(w.Store.Rev) + strings.Repeat("v", rapid.IntRange(0, 120).Draw(t, "value size"))
		ops = append(ops, Op{Key: k, Value: v, Delete: rapid.IntRange(0, 3).Draw(t, "delete") == 0})
	}
	return ops
}

// writeAll is a transaction putting every key, with values of size n.
func writeAll(n int) []Op {
	var ops []Op
	for _, k := range keys {
		ops = append(ops, Op{Key: k, Value: strings.Repeat("w", n)})
	}
	return ops
}

// runSchedule drives one world with a rapid-generated schedule and
// reports every violation of the watch and keep-alive guarantees.
func runSchedule(t *rapid.T) {
	retry := 100 * time.Millisecond
	cfg := node.Config{
		Port: port.Config{
			StreamBufferBytes: rapid.IntRange(100, 800).Draw(t, "stream buffer bytes"),
			TotalBufferBytes:  rapid.IntRange(200, 4000).Draw(t, "total buffer bytes"),
			RetryInterval:     retry,
		},
		Watch: watch.Config{
			HistoryEvents: rapid.IntRange(1, 12).Draw(t, "history events"),
			FragmentBytes: rapid.IntRange(60, 400).Draw(t, "fragment bytes"),
			RetryInterval: retry,
		},
		Members:  Members(3),
		Failover: failover.Config{Timeout: time.Second},
	}
	if rapid.IntRange(0, 3).Draw(t, "proxy's own progress cadence") == 0 {
		cfg.Watch.ProgressInterval = time.Second
	}
	if rapid.IntRange(0, 2).Draw(t, "read cache") != 0 {
		max := rapid.IntRange(300, 3000).Draw(t, "cache bytes")
		cfg.Cache = cache.Config{MaxBytes: max, MaxEntryBytes: max / 2, ConsistentReads: rapid.Bool().Draw(t, "consistent reads from the cache"),
			IdleAfter: time.Duration(rapid.IntRange(2, 20).Draw(t, "cache idle seconds")) * time.Second}
	}
	w := NewWorld(cfg)
	if rapid.IntRange(0, 9).Draw(t, "replayed at the end") == 0 {
		// One schedule in ten is replayed from its inputs at the end. (A
		// draw, not a count of schedules, so that a failing schedule
		// replays the same from its seed or fail file.)
		w.Recording = &Recording{}
	}
	if os.Getenv("SIM_TRACE") != "" {
		w.Trace = t.Logf
	}
	w.Open()
	openClients := func() []port.StreamID {
		var ids []port.StreamID
		for _, id := range w.clientIDs() {
			if !w.Clients[id].Closed {
				ids = append(ids, id)
			}
		}
		return ids
	}
	pickClient := func(t *rapid.T) *Client {
		ids := openClients()
		if len(ids) == 0 {
			t.Skip("no client stream open")
		}
		return w.Clients[rapid.SampledFrom(ids).Draw(t, "stream")]
	}
	actions := map[string]func(*rapid.T){
		"open": func(t *rapid.T) {
			if len(openClients()) >= 4 {
				t.Skip("enough streams")
			}
			var id port.StreamID
			switch rapid.IntRange(0, 5).Draw(t, "stream kind") {
			case 0:
				id = w.OpenRequiringLeader()
			case 1, 2:
				// With an auth token: served in that token's lane.
				id = w.OpenWithToken(rapid.SampledFrom(tokens).Draw(t, "token"))
			default:
				id = w.Open()
			}
			// Some clients start as slow readers.
			w.Clients[id].Reading = rapid.Bool().Draw(t, "reads")
		},
		"create": func(t *rapid.T) {
			c := pickClient(t)
			key, end := drawRange(t)
			req := &pb.WatchCreateRequest{Key: key, RangeEnd: end,
				PrevKv: rapid.Bool().Draw(t, "prev_kv"), Fragment: rapid.Bool().Draw(t, "fragment"),
				ProgressNotify: rapid.Bool().Draw(t, "progress_notify")}
			switch rapid.IntRange(0, 9).Draw(t, "start kind") {
			case 0, 1, 2, 3, 4:
			case 5, 6, 7:
				req.StartRevision = rapid.Int64Range(1, w.Store.Rev).Draw(t, "past start")
			case 8:
				req.StartRevision = w.Store.Rev + rapid.Int64Range(1, 3).Draw(t, "future by")
			default:
				req.StartRevision = -1
			}
			if rapid.IntRange(0, 9).Draw(t, "filter") == 0 {
				req.Filters = []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_FilterType(rapid.IntRange(0, 1).Draw(t, "filter type"))}
			}
			if rapid.IntRange(0, 4).Draw(t, "chosen id") == 0 {
				// Chosen IDs stay clear of the automatic ones (0, 1, 2...).
				req.WatchId = rapid.Int64Range(100, 103).Draw(t, "watch id")
			}
			w.Create(c.ID, req)
		},
		"cancel": func(t *rapid.T) {
			c := pickClient(t)
			var live []*ClientWatch
			for _, id := range sortedIDs(c.watches) {
				if cw := c.watches[id]; !cw.CancelSent {
					live = append(live, cw)
				}
			}
			for _, cw := range c.pending {
				// A create not answered yet, whose ID the client chose
				// (unless another create not answered yet chose it too:
				// which one a cancel by that ID meets depends on etcd's
				// answers to both).
				if cw.Req.WatchId != 0 && !cw.Refused && !cw.CancelSent && !c.idShared(cw) {
					live = append(live, cw)
				}
			}
			if len(live) == 0 {
				t.Skip("no watch to cancel")
			}
			w.Cancel(c.ID, rapid.SampledFrom(live).Draw(t, "watch"))
		},
		"progress": func(t *rapid.T) { w.RequestProgress(pickClient(t).ID) },
		"read":     func(t *rapid.T) { w.Read(pickClient(t).ID) },
		"pause or resume reading": func(t *rapid.T) {
			c := pickClient(t)
			c.Reading = !c.Reading
		},
		"close": func(t *rapid.T) { w.Close(pickClient(t).ID) },
		"write": func(t *rapid.T) { w.Write(drawOps(t, w)...) },
		// Several writes that etcd sends and the proxy receives at once:
		// what makes slow streams go over their bound.
		"write burst": func(t *rapid.T) {
			for range rapid.IntRange(2, 8).Draw(t, "writes") {
				w.Write(drawOps(t, w)...)
			}
			u := rapid.SampledFrom(w.UpIDs()).Draw(t, "upstream")
			w.Pump(u, 1<<30, rapid.Bool().Draw(t, "fragments"))
			w.Deliver(u, 1<<30, func() bool { return rapid.Bool().Draw(t, "from etcd's control queue") })
		},
		"compact": func(t *rapid.T) {
			if w.Store.Rev <= w.Store.Compacted+1 {
				t.Skip("nothing to compact")
			}
			w.Compact(rapid.Int64Range(w.Store.Compacted+1, w.Store.Rev).Draw(t, "compact at"))
		},
		"answer fetch": func(t *rapid.T) {
			if len(w.fetches) == 0 {
				t.Skip("no fetch pending")
			}
			w.AnswerFetch(rapid.IntRange(0, len(w.fetches)-1).Draw(t, "fetch"), rapid.IntRange(0, 9).Draw(t, "retry") == 0)
		},
		// etcd serves a fetch now; its answer arrives later.
		"etcd serves a fetch": func(t *rapid.T) {
			if len(w.fetches) == 0 {
				t.Skip("no fetch pending")
			}
			w.ServeFetch(rapid.IntRange(0, len(w.fetches)-1).Draw(t, "fetch"))
		},
		"fetch answer arrives": func(t *rapid.T) {
			if len(w.served) == 0 {
				t.Skip("no fetch served")
			}
			w.DeliverFetch(rapid.IntRange(0, len(w.served)-1).Draw(t, "served fetch"))
		},
		"etcd sends": func(t *rapid.T) {
			w.Pump(rapid.SampledFrom(w.UpIDs()).Draw(t, "upstream"), rapid.IntRange(1, 3).Draw(t, "revisions"), rapid.Bool().Draw(t, "fragments"))
		},
		"deliver": func(t *rapid.T) {
			w.Deliver(rapid.SampledFrom(w.UpIDs()).Draw(t, "upstream"), rapid.IntRange(1, 4).Draw(t, "responses"),
				func() bool { return rapid.Bool().Draw(t, "from etcd's control queue") })
		},
		"etcd progress tick": func(t *rapid.T) { w.ProgressTick() },
		"lose upstream": func(t *rapid.T) {
			if rapid.IntRange(0, 2).Draw(t, "really") != 0 {
				t.Skip("rare")
			}
			w.Lose(rapid.SampledFrom(w.UpIDs()).Draw(t, "upstream"))
		},
		"member fails": func(t *rapid.T) {
			if rapid.IntRange(0, 2).Draw(t, "really") != 0 {
				t.Skip("rare")
			}
			m := w.InUse()
			if !rapid.Bool().Draw(t, "the one in use") {
				m = w.Members[rapid.IntRange(0, len(w.Members)-1).Draw(t, "member")]
			}
			w.Fail(m, MemberFault(rapid.IntRange(1, 3).Draw(t, "fault")))
		},
		"member heals": func(t *rapid.T) {
			var failed []*Member
			for _, m := range w.Members {
				if m.Fault != Healthy {
					failed = append(failed, m)
				}
			}
			if len(failed) == 0 {
				t.Skip("every member is healthy")
			}
			w.Heal(failed[rapid.IntRange(0, len(failed)-1).Draw(t, "failed member")])
		},
		"tick": func(t *rapid.T) {
			w.Tick(time.Duration(rapid.IntRange(1, 12).Draw(t, "tenths of a second")) * 100 * time.Millisecond)
		},
		"": func(t *rapid.T) {
			if len(w.Violations) > 0 {
				t.Fatalf("guarantee violated:\n  %s", strings.Join(w.Violations, "\n  "))
			}
		},
	}
	maps.Copy(actions, leaseActions(w))
	maps.Copy(actions, cacheActions(w))
	maps.Copy(actions, authActions(w))
	maps.Copy(actions, steered(w))
	t.Repeat(actions)
	// Every member but the one in use comes back: the node must move off
	// that one if it failed, and every watch resume there exactly.
	for _, m := range w.Members {
		if m != w.InUse() {
			w.Heal(m)
		}
	}
	w.Settle()
	if w.Trace != nil {
		w.Trace("settled; checking completeness")
	}
	w.CheckComplete()
	w.CheckProgressNotified()
	w.CloseAll()
	coverage.Add(w.Coverage)
	if w.Recording != nil {
		if same, diff := w.Recording.Replay(cfg, time.Unix(0, 0)); !same {
			t.Fatalf("the node's outputs are not a function of its inputs: replaying %d inputs: %s", len(w.Recording.Inputs), diff)
		}
		coverage.Replayed++
	}
	if len(w.Violations) > 0 {
		t.Fatalf("guarantee violated at the end:\n  %s", strings.Join(w.Violations, "\n  "))
	}
}

// cacheActions are the schedule's read steps: client connections (as
// identities) reading ranges with random options, serializable or
// linearizable, and etcd serving the reads the cache forwards and its
// answers arriving late.
func cacheActions(w *World) map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"read a range": func(t *rapid.T) {
			if len(w.Readers) < 3 && rapid.IntRange(0, 2).Draw(t, "new connection") == 0 || len(w.Readers) == 0 {
				w.AddReader(rapid.SampledFrom([]string{"", "", "u1", "u2"}).Draw(t, "identity"))
			}
			r := w.Readers[rapid.IntRange(0, len(w.Readers)-1).Draw(t, "reader")]
			key, end := drawRange(t)
			if len(key) == 0 {
				key = []byte{0}
			}
			req := &pb.RangeRequest{Key: key, RangeEnd: end, Serializable: rapid.Bool().Draw(t, "serializable")}
			switch rapid.IntRange(0, 5).Draw(t, "read options") {
			case 0:
				req.Limit = rapid.Int64Range(1, 2).Draw(t, "limit")
			case 1:
				req.KeysOnly = true
			case 2:
				req.CountOnly = true
			}
			w.ReadRange(r, req)
		},
		// A watcher of every key starting far back (the range of the
		// cache's subscription: its group rewinds), then an earlier read
		// made again while the rewound watch catches up.
		"read during a rewind": func(t *rapid.T) {
			if len(w.Made) == 0 {
				t.Skip("nothing read yet")
			}
			m := earlierRead(t, w)
			id := w.Open()
			w.Create(id, &pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1})
			w.answerFetches()
			w.readAgain(m.Reader, m, true)
			w.settleReads()
		},
		// etcd serves a read, then a write on its key is delivered to the
		// cache's subscription, and only then does the read's answer come
		// back: it is older than what the cache was told, and must not be
		// kept (read again to see).
		"steer: a fill older than the subscription": func(t *rapid.T) {
			if len(w.Readers) == 0 {
				w.AddReader("")
			}
			r := w.Readers[rapid.IntRange(0, len(w.Readers)-1).Draw(t, "reader")]
			k := []byte(rapid.SampledFrom(keys).Draw(t, "key"))
			w.Write(Op{Key: string(k), Value: "x"})
			w.ReadRange(r, &pb.RangeRequest{Key: k, Serializable: true})
			if len(w.forwarded) == 0 {
				return
			}
			w.ServeRead(len(w.forwarded) - 1)
			w.Write(Op{Key: string(k), Value: "y"})
			w.Pump(port.WatchShared, 1<<30, false)
			w.Deliver(port.WatchShared, 1<<30, func() bool { return true })
			w.DeliverRead(len(w.answering) - 1)
			w.ReadRange(r, &pb.RangeRequest{Key: k, Serializable: true})
			w.settleReads()
		},
		// A key cached, written and not delivered yet, then read
		// linearizably: the answer must wait for the write.
		"steer: a linearizable read after a write": func(t *rapid.T) {
			if len(w.Readers) == 0 {
				w.AddReader("")
			}
			r := w.Readers[rapid.IntRange(0, len(w.Readers)-1).Draw(t, "reader")]
			k := []byte(rapid.SampledFrom(keys).Draw(t, "key"))
			for range 2 {
				w.ReadRange(r, &pb.RangeRequest{Key: k, Serializable: true})
				w.settleReads()
			}
			w.Write(Op{Key: string(k), Value: "z"})
			w.ReadRange(r, &pb.RangeRequest{Key: k})
			w.answerFetches()
			w.settleReads()
		},
		// Two identities read the same key, one after the other.
		"steer: two identities read one key": func(t *rapid.T) {
			a, b := w.AddReader("u1"), w.AddReader("u2")
			k := []byte(rapid.SampledFrom(keys).Draw(t, "key"))
			for _, r := range []*Reader{a, a, b} {
				w.ReadRange(r, &pb.RangeRequest{Key: k, Serializable: true})
				w.settleReads()
			}
		},
		// A read forwarded, served and filled at once, then read again.
		"hot read": func(t *rapid.T) {
			if len(w.Readers) == 0 {
				t.Skip("no connection")
			}
			r := w.Readers[rapid.IntRange(0, len(w.Readers)-1).Draw(t, "reader")]
			key, end := drawRange(t)
			if len(key) == 0 {
				key = []byte{0}
			}
			for range rapid.IntRange(2, 4).Draw(t, "times") {
				w.ReadRange(r, &pb.RangeRequest{Key: key, RangeEnd: end, Serializable: rapid.Bool().Draw(t, "serializable")})
				w.settleReads()
			}
		},
		// A write etcd has not delivered yet, the shared stream broken, and
		// an earlier read made again: where a cache serving while its
		// subscription is not live would answer from before the break.
		"read across a break": func(t *rapid.T) {
			if len(w.Made) == 0 {
				t.Skip("nothing read yet")
			}
			m := earlierRead(t, w)
			w.Write(drawOps(t, w)...)
			w.Lose(port.WatchShared)
			for range 2 {
				w.readAgain(m.Reader, m, true)
				w.settleReads()
			}
		},
		// A connection reads X, then, after a write etcd has not delivered
		// yet, something else (forwarded: answered at the new revision),
		// then X again: where an answer below the connection's floor shows.
		"read after a newer answer": func(t *rapid.T) {
			if len(w.Made) == 0 {
				t.Skip("nothing read yet")
			}
			m := earlierRead(t, w)
			again := func() {
				w.readAgain(m.Reader, m, true)
				w.settleReads()
			}
			again()
			w.Write(drawOps(t, w)...)
			w.ReadRange(m.Reader, &pb.RangeRequest{Key: []byte(rapid.SampledFrom(keys).Draw(t, "other key")), CountOnly: true, Serializable: true, Limit: 7})
			w.settleReads()
			again()
		},
		// Hot reads: a connection reads what it (or another) read before,
		// several times.
		"read again": func(t *rapid.T) {
			if len(w.Made) == 0 {
				t.Skip("nothing read yet")
			}
			m := earlierRead(t, w)
			r := m.Reader
			if rapid.IntRange(0, 3).Draw(t, "another connection") == 0 {
				r = w.Readers[rapid.IntRange(0, len(w.Readers)-1).Draw(t, "reader")]
			}
			for range rapid.IntRange(1, 3).Draw(t, "times") {
				w.readAgain(r, m, rapid.Bool().Draw(t, "serializable"))
			}
		},
		"etcd serves a read": func(t *rapid.T) {
			if len(w.forwarded) == 0 {
				t.Skip("no read forwarded")
			}
			w.ServeRead(rapid.IntRange(0, len(w.forwarded)-1).Draw(t, "forwarded read"))
		},
		"read answer arrives": func(t *rapid.T) {
			if len(w.answering) == 0 {
				t.Skip("no read served")
			}
			w.DeliverRead(rapid.IntRange(0, len(w.answering)-1).Draw(t, "served read"))
		},
	}
}

// authActions change, directly on etcd, what a token may do: its user's
// grant revoked or given back, the token expired or renewed.
func authActions(w *World) map[string]func(*rapid.T) {
	// withLane draws a token whose user's streams have a lane.
	withLane := func(t *rapid.T, ok func(tok string) bool) (string, bool) {
		var toks []string
		for _, tok := range tokens {
			if w.laneOf(tok) != 0 && ok(tok) {
				toks = append(toks, tok)
			}
		}
		if len(toks) == 0 {
			return "", false
		}
		return rapid.SampledFrom(toks).Draw(t, "token"), true
	}
	return map[string]func(*rapid.T){
		"revoke or restore a grant": func(t *rapid.T) {
			tok := rapid.SampledFrom(tokens).Draw(t, "token")
			w.SetRevoked(tok, !w.grantOf(tok).revoked)
		},
		// A token expires and its lane's shared stream breaks: etcd
		// refuses the token on the re-creates if the lane's streams carry
		// it. The client streams with that token must end, for their
		// clients to come back with a fresh one (renewed here at once);
		// the lane goes on under another token of the user if a stream
		// carries one.
		"expire a token and break its lane": func(t *rapid.T) {
			tok, ok := withLane(t, func(string) bool { return true })
			if !ok {
				return // nothing to steer (not a skip: see groupMember)
			}
			lane := port.LaneOf(w.laneOf(tok))
			w.SetExpired(tok, true)
			w.Lose(lane.Shared)
			w.Deliver(lane.Shared, 1<<30, ctrlFirst)
			w.SetExpired(tok, false)
		},
		// The lanes the node opens again under another token see their
		// old streams break.
		"reopen lanes for their new token": func(t *rapid.T) { w.ReopenLanes() },
		// A grant revoked and the token's lane broken: etcd refuses the
		// re-creates, and the lane's watchers must be told (cancelled with
		// etcd's reason); the grant comes back and writes go on.
		"revoke a grant and break its lane": func(t *rapid.T) {
			tok, ok := withLane(t, func(tok string) bool { return !w.grantOf(tok).revoked })
			if !ok {
				return
			}
			lane := port.LaneOf(w.laneOf(tok))
			w.SetRevoked(tok, true)
			w.Lose(lane.Shared)
			w.Deliver(lane.Shared, 1<<30, ctrlFirst)
			w.SetRevoked(tok, false)
			w.Write(writeAll(1)...)
		},
		// A grant revoked while the token's lane serves a range, and a
		// create on that range: it joins a group etcd accepted before the
		// revoke, so only the create's own check (the revision read with
		// the client's token) can refuse it, as etcd would.
		"revoke a grant, then watch a range its lane serves": func(t *rapid.T) {
			tok := rapid.SampledFrom(tokens).Draw(t, "token")
			g := w.grantOf(tok)
			if g.revoked || w.expired[tok] {
				return
			}
			var c *Client
			for _, id := range w.clientIDs() {
				if x := w.Clients[id]; !x.Closed && x.Token == tok {
					c = x
					break
				}
			}
			if c == nil {
				c = w.Clients[w.OpenWithToken(tok)]
			}
			c.Reading = true
			// A range the token may watch: its grant's first key.
			req := &pb.WatchCreateRequest{Key: g.key}
			if len(g.key) == 1 && g.key[0] == 0 {
				req.Key = []byte("a")
			}
			lane := func() port.UpstreamID { return port.LaneOf(w.laneOf(tok)).Shared }
			w.Create(c.ID, req)
			w.answerFetches()
			w.Deliver(lane(), 1<<30, ctrlFirst)
			w.Read(c.ID)
			w.SetRevoked(tok, true)
			w.Create(c.ID, &pb.WatchCreateRequest{Key: req.Key})
			w.answerFetches()
			w.Deliver(lane(), 1<<30, ctrlFirst)
			w.Read(c.ID)
			w.SetRevoked(tok, false)
		},
		// Two tokens of one user watch through one lane; the lane's token
		// expires and its streams break: the lane must go on under the
		// other token, and only the streams with the expired one end.
		"steer: the lane's token expires, another of its user remains": func(t *rapid.T) {
			first := rapid.SampledFrom([]string{"t1", "t3"}).Draw(t, "first token")
			other := map[string]string{"t1": "t3", "t3": "t1"}[first]
			if w.laneOf(first) != 0 || w.grantOf(first).revoked || w.expired[first] || w.expired[other] {
				return // the lane exists already, its token unknown here
			}
			a, b := w.Clients[w.OpenWithToken(first)], w.Clients[w.OpenWithToken(other)]
			for _, c := range []*Client{a, b} {
				w.Create(c.ID, &pb.WatchCreateRequest{Key: []byte("a")})
			}
			lane := port.LaneOf(w.laneOf(first))
			w.answerFetches()
			w.Deliver(lane.Shared, 1<<30, ctrlFirst)
			w.SetExpired(first, true)
			w.Lose(lane.Shared)
			w.Deliver(lane.Shared, 1<<30, ctrlFirst)
			w.SetExpired(first, false)
			w.ReopenLanes()
			w.Write(writeAll(1)...)
			w.Deliver(lane.Shared, 1<<30, ctrlFirst)
			w.Read(a.ID)
			w.Read(b.ID)
		},
		"expire or renew a token": func(t *rapid.T) {
			if rapid.IntRange(0, 2).Draw(t, "really") != 0 {
				t.Skip("rare")
			}
			tok := rapid.SampledFrom(tokens).Draw(t, "token")
			w.SetExpired(tok, !w.expired[tok])
		},
	}
}

// leaseActions are the schedule's lease steps: client keep-alive streams
// (opened, asking once or at a rate of their own, stopping, not reading,
// closing), etcd granting and revoking leases, its answers arriving late,
// the keep-alive stream lost, and time passing with etcd answering
// promptly (where check (d) can judge expiries).
func leaseActions(w *World) map[string]func(*rapid.T) {
	pickLease := func(t *rapid.T) int64 {
		ids := w.Alive()
		if len(ids) == 0 || rapid.IntRange(0, 9).Draw(t, "a lease etcd does not have") == 0 {
			// One that expired or was revoked, or one never granted.
			var gone []int64
			for _, id := range slices.Sorted(maps.Keys(w.Leases)) {
				if l := w.Leases[id]; l.Granted && !l.alive() {
					gone = append(gone, id)
				}
			}
			return rapid.SampledFrom(append(gone, 1000)).Draw(t, "lease")
		}
		return rapid.SampledFrom(ids).Draw(t, "lease")
	}
	pickStream := func(t *rapid.T) *KeepAliveClient {
		ids := w.keepAliveIDs()
		if len(ids) == 0 {
			ids = append(ids, w.OpenKeepAlive())
		}
		return w.KeepAlives[rapid.SampledFrom(ids).Draw(t, "keep-alive stream")]
	}
	return map[string]func(*rapid.T){
		"lease: client": func(t *rapid.T) {
			switch rapid.IntRange(0, 9).Draw(t, "keep-alive client does") {
			case 0:
				if len(w.keepAliveIDs()) >= 3 {
					t.Skip("enough keep-alive streams")
				}
				id := w.OpenKeepAlive()
				w.KeepAlives[id].Reading = rapid.IntRange(0, 3).Draw(t, "reads") > 0
			case 1, 2, 3:
				c := pickStream(t)
				id := pickLease(t)
				for range rapid.IntRange(1, 3).Draw(t, "keep-alives") {
					w.KeepAlive(c.ID, id)
				}
			case 4, 5, 6:
				c := pickStream(t)
				periods := []time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond, time.Second, 2 * time.Second}
				w.KeepAliveEvery(c.ID, pickLease(t), rapid.SampledFrom(periods).Draw(t, "every"))
			case 7, 8:
				c := pickStream(t)
				c.Reading = !c.Reading
				w.ReadKeepAlive(c.ID)
			default:
				w.CloseKeepAlive(pickStream(t).ID)
			}
		},
		"lease: etcd grants or revokes": func(t *rapid.T) {
			switch rapid.IntRange(0, 3).Draw(t, "etcd does") {
			case 0, 1:
				if len(w.Alive()) >= 5 {
					t.Skip("enough leases")
				}
				w.Grant(rapid.Int64Range(1, 8).Draw(t, "ttl"))
			default:
				ids := w.Alive()
				if len(ids) == 0 {
					t.Skip("no lease to revoke")
				}
				w.Revoke(rapid.SampledFrom(ids).Draw(t, "revoked lease"), rapid.Bool().Draw(t, "through the proxy"))
			}
		},
		"lease: keep-alive answers arrive": func(t *rapid.T) {
			if len(w.answers) == 0 {
				t.Skip("no keep-alive answer")
			}
			w.AnswerKeepAlives(rapid.IntRange(1, 4).Draw(t, "answers"))
		},
		"lease: keep-alive stream lost": func(t *rapid.T) {
			if rapid.IntRange(0, 2).Draw(t, "really") != 0 {
				t.Skip("rare")
			}
			w.LoseKeepAlive()
		},
		"lease: time passes": func(t *rapid.T) {
			step := time.Duration(rapid.IntRange(1, 5).Draw(t, "tenths of a second a tick")) * 100 * time.Millisecond
			for range rapid.IntRange(1, 30).Draw(t, "ticks") {
				w.Tick(step)
				w.AnswerKeepAlives(len(w.answers))
			}
		},
	}
}

// coverage adds up what every schedule of a run reached.
var coverage Coverage

func sortedIDs(m map[int64]*ClientWatch) []int64 { return slices.Sorted(maps.Keys(m)) }

// TestCoreSimulation checks the watch machine, through the composite node,
// against the model under rapid-generated schedules, and fails if the run
// never reached one of the rare situations Coverage counts. Replay a
// failure with the seed it prints:
//
//	go test ./sim -run TestCoreSimulation -rapid.seed=<seed>
func TestCoreSimulation(t *testing.T) {
	coverage = Coverage{}
	rapid.Check(t, runSchedule)
	t.Logf("reached: %+v", coverage)
	if missing := coverage.Missing(); len(missing) > 0 && !t.Failed() && checks() >= 500 {
		t.Errorf("the run never reached: %s", strings.Join(missing, "; "))
	}
}

// checks is the number of schedules a run checks.
func checks() int {
	n, _ := strconv.Atoi(flag.Lookup("rapid.checks").Value.String())
	return n
}

// earlierRead draws one of the reads made so far (there is one).
func earlierRead(t *rapid.T, w *World) MadeRead {
	return w.Made[rapid.IntRange(0, len(w.Made)-1).Draw(t, "earlier read")]
}

// readAgain makes the read m again on connection r, serializable or not.
func (w *World) readAgain(r *Reader, m MadeRead, serializable bool) {
	req := proto.Clone(m.Req).(*pb.RangeRequest)
	req.Serializable = serializable
	w.ReadRange(r, req)
}
