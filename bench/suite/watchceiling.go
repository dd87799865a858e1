package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/bench/internal/probe"
	"github.com/etcdproxy/etcdproxy/shell"
)

// The watch ceiling is this binary run again with -serve=watch: a gRPC
// server whose Watch service does the least a watch fan-out can do, and
// nothing else. Client watches with the same creation request (key, range
// end, start revision, filters, prev_kv, progress_notify) share one
// upstream watch on etcd (over watchUpstreams streams on one connection);
// each upstream response is decoded once (to route it by its watch ID) and
// encoded once with no watch ID, and every client watcher is sent those
// same bytes behind the few bytes of its own watch_id field (protobuf
// fields may come in any order), through a codec that hands gRPC both
// buffers as they are. A group that starts at a past revision keeps every
// response it had, so that a watcher joining it later gets them too; a
// group that starts now keeps nothing. Creates are answered in the order a
// stream sent them (as etcd does): one from a past revision at once, with
// the latest header the ceiling has seen (its events come from the group
// whenever etcd sends them), one from now once etcd has created the
// group's watch (so that its header's revision is where it starts); a
// group's last watcher gone cancels its upstream watch. No
// flow control: a slow client's queue grows. RequestProgress is ignored.
//
// Every other call is relayed to etcd as bytes, undecoded: unary calls as
// the forwarder does (forwarder.go), and LeaseKeepAlive as one upstream
// stream per client stream, messages both ways as they are.

func init() { ceilings["watch"] = serveWatchCeiling }

const (
	watchMethod     = "/etcdserverpb.Watch/Watch"
	keepAliveMethod = "/etcdserverpb.Lease/LeaseKeepAlive"
	// watchUpstreams is the number of upstream watch streams the groups
	// are spread over.
	watchUpstreams = 16
)

// preparedMsg is an encoded message in parts sent as they are: a prefix
// of its own and bodies shared with other messages. Encoded messages
// concatenated are one message, merged: a watcher's queued event
// responses go out as one response with all their events, the header of
// the last, and the watch_id field once.
type preparedMsg struct {
	prefix []byte
	bodies [][]byte
	id     int64 // the watch's ID, if events is set
	events bool  // only events (or a progress notification): may be merged
}

// bytesCodec sends *[]byte and *preparedMsg as they are and receives
// *[]byte undecoded.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *[]byte:
		return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
	case *preparedMsg:
		out := make(mem.BufferSlice, 0, 1+len(m.bodies))
		if len(m.prefix) > 0 {
			out = append(out, mem.SliceBuffer(m.prefix))
		}
		for _, b := range m.bodies {
			out = append(out, mem.SliceBuffer(b))
		}
		return out, nil
	}
	return nil, fmt.Errorf("bytesCodec: cannot send %T", v)
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("bytesCodec: cannot receive into %T", v)
	}
	*b = data.Materialize()
	return nil
}

func (bytesCodec) Name() string { return "proto" }

// serveWatchCeiling serves the watch ceiling on addr in front of the etcd
// member at upstream until killed.
func serveWatchCeiling(addr, upstream string) error {
	conn, err := probe.Dial(upstream)
	if err != nil {
		return err
	}
	c := &watchCeiling{conn: conn, groups: map[groupKey]*watchGroup{}}
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	r, err := pb.NewKVClient(conn).Range(rctx, &pb.RangeRequest{Key: []byte{0}, CountOnly: true})
	cancel()
	if err != nil {
		return err
	}
	c.latest.Store(r.Header)
	for range watchUpstreams {
		st, err := pb.NewWatchClient(conn).Watch(context.Background())
		if err != nil {
			return err
		}
		u := &upstreamWatch{st: st, groups: map[int64]*watchGroup{}}
		c.ups = append(c.ups, u)
		go func() {
			err := c.receive(u)
			fmt.Fprintln(os.Stderr, "suite: watch ceiling: upstream watch stream ended:", err)
			os.Exit(1)
		}()
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}), grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		method, ok := grpc.MethodFromServerStream(st)
		if !ok {
			return errors.New("no method")
		}
		switch method {
		case watchMethod:
			return c.serveStream(st)
		case keepAliveMethod:
			return relayStream(conn, method, st)
		}
		var in, out []byte
		if err := st.RecvMsg(&in); err != nil {
			return err
		}
		if err := conn.Invoke(st.Context(), method, &in, &out, grpc.ForceCodecV2(bytesCodec{})); err != nil {
			return err
		}
		return st.SendMsg(&out)
	}))
	fmt.Fprintln(os.Stderr, shell.ReadyMessage)
	return srv.Serve(lis)
}

// relayStream relays a bidirectional stream to etcd, messages as they are.
func relayStream(conn *grpc.ClientConn, method string, st grpc.ServerStream) error {
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	up, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method, grpc.ForceCodecV2(bytesCodec{}))
	if err != nil {
		return err
	}
	go func() {
		for {
			var b []byte
			if err := st.RecvMsg(&b); err != nil {
				_ = up.CloseSend()
				return
			}
			if err := up.SendMsg(&b); err != nil {
				cancel()
				return
			}
		}
	}()
	for {
		var b []byte
		if err := up.RecvMsg(&b); err != nil {
			return err
		}
		if err := st.SendMsg(&b); err != nil {
			return err
		}
	}
}

type watchCeiling struct {
	conn *grpc.ClientConn
	ups  []*upstreamWatch

	mu     sync.Mutex
	groups map[groupKey]*watchGroup
	nextID int64 // last upstream watch ID given

	latest atomic.Pointer[pb.ResponseHeader] // the highest revision's header seen
}

// groupKey is what client watches must share to share an upstream watch.
type groupKey struct {
	key, end       string
	start          int64
	filters        string
	prevKV, notify bool
}

type upstreamWatch struct {
	sendMu sync.Mutex // one Send at a time
	st     pb.Watch_WatchClient

	mu     sync.Mutex
	groups map[int64]*watchGroup // by upstream watch ID
}

func (u *upstreamWatch) send(r *pb.WatchRequest) error {
	u.sendMu.Lock()
	defer u.sendMu.Unlock()
	return u.st.Send(r)
}

type watchGroup struct {
	key groupKey
	id  int64 // upstream watch ID
	up  *upstreamWatch

	mu       sync.Mutex
	created  chan struct{} // closed once etcd has answered the create
	header   *pb.ResponseHeader
	pending  []watcherRef          // waiting for etcd's created response
	watchers map[watcherRef][]byte // each one's watch_id field
	history  [][]byte              // every response body, for a group from a past revision
	gone     bool                  // canceled; a create finding it starts a new group
}

type watcherRef struct {
	s  *clientStream
	id int64
}

// clientStream is one client Watch stream: its requests are handled on
// the stream's goroutine, its responses queued and sent by another.
type clientStream struct {
	st grpc.ServerStream

	mu       sync.Mutex
	queue    []preparedMsg
	wake     chan struct{} // closed with closed set
	closed   bool
	sent     chan struct{} // closed once sendLoop has returned
	nextID   int64
	watchers map[int64]*watchGroup
}

func (s *clientStream) enqueue(m preparedMsg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.queue = append(s.queue, m)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *clientStream) sendLoop() {
	defer close(s.sent)
	for range s.wake {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return
		}
		for _, m := range coalesce(q) {
			if err := s.st.SendMsg(&m); err != nil {
				return
			}
		}
	}
}

// maxMerged bounds the bytes of a merged response.
const maxMerged = 1 << 20

// coalesce merges each watch's event responses in q into as few as
// maxMerged allows, in their order; no response moves across one that is
// not only events (a created or canceled response).
func coalesce(q []preparedMsg) []preparedMsg {
	out := q[:0:0]
	open := map[int64]int{} // watch ID -> index in out of its response being merged
	size := map[int64]int{}
	for _, m := range q {
		if !m.events {
			clear(open)
			out = append(out, m)
			continue
		}
		if i, ok := open[m.id]; ok && size[m.id]+len(m.bodies[0]) <= maxMerged {
			out[i].bodies = append(out[i].bodies, m.bodies...)
			size[m.id] += len(m.bodies[0])
			continue
		}
		open[m.id], size[m.id] = len(out), len(m.bodies[0])
		out = append(out, m)
	}
	return out
}

// watchIDField is the watch_id field (2) of a WatchResponse.
func watchIDField(id int64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), uint64(id))
}

func encodeWatchResponse(r *pb.WatchResponse) preparedMsg {
	b, err := proto.Marshal(r)
	if err != nil {
		panic(err)
	}
	return preparedMsg{bodies: [][]byte{b}}
}

func (c *watchCeiling) serveStream(st grpc.ServerStream) error {
	s := &clientStream{st: st, wake: make(chan struct{}, 1), sent: make(chan struct{}), watchers: map[int64]*watchGroup{}}
	go s.sendLoop()
	defer func() {
		s.mu.Lock()
		s.closed = true
		close(s.wake)
		ws := s.watchers
		s.watchers = nil
		s.mu.Unlock()
		<-s.sent // no SendMsg once the handler has returned
		for id, g := range ws {
			c.leave(g, watcherRef{s, id})
		}
	}()
	for {
		var b []byte
		if err := st.RecvMsg(&b); err != nil {
			return nil
		}
		var req pb.WatchRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return err
		}
		switch r := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if err := c.create(s, r.CreateRequest); err != nil {
				return err
			}
		case *pb.WatchRequest_CancelRequest:
			id := r.CancelRequest.WatchId
			s.mu.Lock()
			g := s.watchers[id]
			delete(s.watchers, id)
			s.mu.Unlock()
			if g != nil {
				c.leave(g, watcherRef{s, id})
				g.mu.Lock()
				h := g.header
				g.mu.Unlock()
				s.enqueue(encodeWatchResponse(&pb.WatchResponse{Header: h, WatchId: id, Canceled: true}))
			}
		}
	}
}

// create joins the group the request belongs to (opening its upstream
// watch if it is new) and returns once the created response is queued.
func (c *watchCeiling) create(s *clientStream, cr *pb.WatchCreateRequest) error {
	s.mu.Lock()
	id := cr.WatchId
	if id == 0 {
		for s.watchers[s.nextID] != nil {
			s.nextID++
		}
		id = s.nextID
		s.nextID++
	}
	s.mu.Unlock()
	k := groupKey{key: string(cr.Key), end: string(cr.RangeEnd), start: cr.StartRevision,
		filters: fmt.Sprint(cr.Filters), prevKV: cr.PrevKv, notify: cr.ProgressNotify}
	w := watcherRef{s, id}
	for {
		c.mu.Lock()
		g := c.groups[k]
		fresh := g == nil
		if fresh {
			c.nextID++
			g = &watchGroup{key: k, id: c.nextID, up: c.ups[c.nextID%int64(len(c.ups))],
				created: make(chan struct{}), watchers: map[watcherRef][]byte{}}
			c.groups[k] = g
			g.up.mu.Lock()
			g.up.groups[g.id] = g
			g.up.mu.Unlock()
		}
		c.mu.Unlock()
		g.mu.Lock()
		if g.gone {
			g.mu.Unlock()
			continue
		}
		s.mu.Lock()
		s.watchers[id] = g
		s.mu.Unlock()
		if k.start > 0 {
			// From a past revision: answered now, with every response
			// the group has had and then every one it gets.
			h := g.header
			if h == nil {
				h = c.latest.Load()
			}
			s.enqueue(encodeWatchResponse(&pb.WatchResponse{Header: h, WatchId: id, Created: true}))
			prefix := watchIDField(id)
			for _, body := range g.history {
				s.enqueue(preparedMsg{prefix: prefix, bodies: [][]byte{body}, id: id, events: true})
			}
			g.watchers[w] = prefix
			g.mu.Unlock()
			if fresh {
				return c.openUpstream(g, cr)
			}
			return nil
		}
		select {
		case <-g.created:
			// Created already: answer now.
			s.enqueue(encodeWatchResponse(&pb.WatchResponse{Header: g.header, WatchId: id, Created: true}))
			g.watchers[w] = watchIDField(id)
			g.mu.Unlock()
			return nil
		default:
			g.pending = append(g.pending, w)
			g.mu.Unlock()
		}
		if fresh {
			if err := c.openUpstream(g, cr); err != nil {
				return err
			}
		}
		select {
		case <-g.created:
			return nil
		case <-s.st.Context().Done():
			return s.st.Context().Err()
		}
	}
}

// openUpstream sends the create of g's upstream watch.
func (c *watchCeiling) openUpstream(g *watchGroup, cr *pb.WatchCreateRequest) error {
	up := proto.Clone(cr).(*pb.WatchCreateRequest)
	up.WatchId = g.id
	up.Fragment = false
	return g.up.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: up}})
}

// leave removes a watcher from its group, canceling the upstream watch if
// it was the last one.
func (c *watchCeiling) leave(g *watchGroup, w watcherRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g.mu.Lock()
	delete(g.watchers, w)
	for i, p := range g.pending {
		if p == w {
			g.pending = append(g.pending[:i], g.pending[i+1:]...)
			break
		}
	}
	last := len(g.watchers) == 0 && len(g.pending) == 0 && !g.gone
	created := false
	select {
	case <-g.created:
		created = true
	default:
	}
	if last && created {
		g.gone = true
		delete(c.groups, g.key)
	}
	g.mu.Unlock()
	if last && created {
		c.cancelUpstream(g)
	}
}

// cancelUpstream cancels a group's upstream watch (off the caller's
// goroutine: the receiving one must not wait on a send).
func (c *watchCeiling) cancelUpstream(g *watchGroup) {
	go func() {
		_ = g.up.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: g.id}}})
	}()
}

// receive routes one upstream stream's responses to the client watchers.
func (c *watchCeiling) receive(u *upstreamWatch) error {
	for {
		r, err := u.st.Recv()
		if err != nil {
			return err
		}
		u.mu.Lock()
		g := u.groups[r.WatchId]
		if r.Canceled {
			delete(u.groups, r.WatchId)
		}
		u.mu.Unlock()
		if g == nil {
			continue
		}
		if h := r.Header; h != nil {
			if l := c.latest.Load(); h.Revision > l.Revision {
				c.latest.CompareAndSwap(l, h)
			}
		}
		r.WatchId = 0
		g.mu.Lock()
		g.header = r.Header
		switch {
		case r.Created:
			close(g.created)
			for _, w := range g.pending {
				w.s.enqueue(encodeWatchResponse(&pb.WatchResponse{Header: r.Header, WatchId: w.id, Created: true}))
				g.watchers[w] = watchIDField(w.id)
			}
			g.pending = nil
			if !r.Canceled && len(r.Events) == 0 {
				break
			}
			fallthrough
		default:
			body := encodeWatchResponse(r).bodies[0]
			if g.key.start > 0 && !r.Canceled {
				g.history = append(g.history, body)
			}
			for w, prefix := range g.watchers {
				w.s.enqueue(preparedMsg{prefix: prefix, bodies: [][]byte{body}, id: w.id, events: !r.Canceled})
			}
		}
		// Canceled by etcd, or created after its last watcher left.
		drop := !g.gone && (r.Canceled || len(g.watchers) == 0)
		if drop {
			g.gone = true
			g.watchers = nil
		}
		g.mu.Unlock()
		if drop {
			c.mu.Lock()
			if c.groups[g.key] == g {
				delete(c.groups, g.key)
			}
			c.mu.Unlock()
			if !r.Canceled {
				c.cancelUpstream(g)
			}
		}
	}
}
