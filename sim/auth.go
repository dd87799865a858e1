package sim

import (
	"bytes"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/etcdproxy/etcdproxy/core/node"
	"github.com/etcdproxy/etcdproxy/core/port"
)

// The model etcd's auth, for client streams that carry a token. Each token
// may read one key range (a grant), which can be revoked and given back,
// and can expire (and be renewed: the model's stand-in for the client's
// fresh token). etcd checks a token where it does for a direct client: on
// the revision fetch of a create (a Range with the client's token on the
// watch's range) and when a watch is created on an upstream stream opened
// with the token (a lane's); never again for a watch it has created.
//
// Checked: (l) a create whose token may not watch its range, from when it
// was made until it is answered, is refused with etcd's reason, and one
// that may, all along, is not refused for auth; (m) a watch whose token
// could not watch its range when etcd took up its re-creation, after its
// lane's upstream stream broke, gets no event written after that, unless
// the stream broke again and etcd then took the re-creation; (n) a
// client stream is ended for its token (node.ErrLaneTokenRefused) only
// when etcd refused that token; (o) a watch the client was told created is
// ended for auth only by etcd refusing an upstream create of its lane sent
// after that (a re-creation), never by the check of the upstream watch that
// was to serve it from the start: that refusal is the create's.

// grant is what a user may read.
type grant struct {
	key, end []byte // etcd's range; end "\x00" is every key from key on
	revoked  bool
}

type authWorld struct {
	// grants, per user; users, each token's user (t1 and t3 are two
	// tokens of one user, which share a lane); expired, per token.
	grants  map[string]*grant
	users   map[string]string
	expired map[string]bool
	// refusals counts, per token, the creates etcd refused on a lane's
	// stream because the token was no good (check n).
	refusals map[string]int
	// changes counts every change of a token's grant or expiry (check l:
	// a verdict holds only while it does not change).
	changes map[string]int
	// deniedAt: per watch, the store's revision when etcd refused to
	// re-create its upstream watch (check m).
	deniedAt map[*ClientWatch]int64
	// recreating: the watches whose upstream watch broke with a stream of
	// their lane, until etcd checks their re-creation (check m).
	recreating map[*ClientWatch]bool
	// readies counts the node's Readies; createdAt holds, for created
	// answers to streams with a token, the Ready that carried them; and
	// refusedSent, per lane, the latest Ready that sent an upstream create
	// etcd refused for auth (check o).
	readies     int
	createdAt   map[*pb.WatchResponse]int
	refusedSent map[int]int
	// laneOfUser: the lane each user's streams are in; reopening: lanes
	// the node asked to open again with another token, which etcd's side
	// has not yet seen break.
	laneOfUser map[string]int
	reopening  []port.LaneStart
}

// tokens are the sim's auth tokens.
var tokens = []string{"t1", "t2", "t3"}

func newAuthWorld() authWorld {
	return authWorld{
		grants: map[string]*grant{
			"u1": {key: []byte("a"), end: []byte("c")}, // a and b
			"u2": {key: []byte{0}, end: []byte{0}},     // everything
		},
		users:    map[string]string{"t1": "u1", "t2": "u2", "t3": "u1"},
		expired:  map[string]bool{},
		deniedAt: map[*ClientWatch]int64{}, recreating: map[*ClientWatch]bool{},
		createdAt: map[*pb.WatchResponse]int{}, refusedSent: map[int]int{},
		changes:    map[string]int{},
		refusals:   map[string]int{},
		laneOfUser: map[string]int{},
	}
}

// grantOf returns the grant of token's user.
func (w *World) grantOf(token string) *grant { return w.grants[w.users[token]] }

// laneOf returns the lane of token's streams (0: none yet).
func (w *World) laneOf(token string) int { return w.laneOfUser[w.users[token]] }

// authError is etcd's answer to token reading [key, end): nil, or why not.
func (w *World) authError(token string, key, end []byte) error {
	g := w.grantOf(token)
	switch {
	case g == nil || w.expired[token]:
		return rpctypes.ErrGRPCInvalidAuthToken
	case g.revoked || !covers(g.key, g.end, key, end):
		return rpctypes.ErrGRPCPermissionDenied
	}
	return nil
}

// covers reports whether the grant [gk, ge) holds the whole watch range
// [key, end) (an empty end: the single key; "\x00": every key from key on).
func covers(gk, ge, key, end []byte) bool {
	if len(key) == 0 {
		key = []byte{0}
	}
	inf := func(b []byte) bool { return len(b) == 1 && b[0] == 0 }
	if bytes.Compare(key, gk) < 0 {
		return false
	}
	if inf(ge) {
		return true
	}
	if len(end) == 0 {
		return bytes.Compare(key, ge) < 0
	}
	return !inf(end) && bytes.Compare(end, ge) <= 0
}

// authReason is authError as a watch's cancel reason ("" for none).
func (w *World) authReason(token string, key, end []byte) string {
	if err := w.authError(token, key, end); err != nil {
		return err.Error()
	}
	return ""
}

// SetRevoked takes the grant of token's user away (or gives it back),
// directly on etcd: every token of the user changes.
func (w *World) SetRevoked(token string, revoked bool) {
	w.grantOf(token).revoked = revoked
	for _, t := range tokens {
		if w.users[t] == w.users[token] {
			w.changes[t]++
		}
	}
}

// SetExpired expires token (or renews it).
func (w *World) SetExpired(token string, expired bool) {
	w.expired[token] = expired
	w.changes[token]++
}

// laneUpstream is etcd's end of one of lane's upstream streams, opened
// with token: etcd checks that token on every create it takes up.
func (w *World) laneUpstream(lane int, token string) *Upstream {
	up := NewUpstream(w.Store)
	up.View = w.Up[port.WatchShared].View
	up.Clock = &w.readies
	up.Token = token
	up.Permit = func(key, end []byte, sent int) string {
		reason := w.authReason(token, key, end)
		if reason == rpctypes.ErrGRPCInvalidAuthToken.Error() {
			w.refusals[token]++
		}
		if reason != "" {
			w.refusedSent[lane] = max(w.refusedSent[lane], sent)
		}
		w.authChecked(lane, key, end, reason != "")
		return reason
	}
	return up
}

// ReopenLanes carries out the node's requests to open lanes again with
// another token: etcd's side sees the old streams break (with what they
// held) and new ones opened with the new token, and the node hears that
// they were lost.
func (w *World) ReopenLanes() {
	rs := w.reopening
	w.reopening = nil
	for _, r := range rs {
		lane, _, _ := r.Lane.Shared.Lane()
		for _, u := range []port.UpstreamID{r.Lane.Shared, r.Lane.CatchUp} {
			if w.Up[u] == nil {
				continue // the lane ended meanwhile
			}
			w.noteLaneLoss(lane, u == r.Lane.Shared)
			w.Up[u] = w.laneUpstream(lane, r.Token)
			w.step(node.UpstreamLost{Upstream: u, Token: r.Token})
		}
	}
}

// noteLaneLoss records, for check (m), the watches on the broken stream
// (the lane's shared one, or its catch-up one): etcd's verdict on their
// re-creation is to come (authChecked).
func (w *World) noteLaneLoss(lane int, shared bool) {
	if lane == 0 {
		return
	}
	for _, id := range w.clientIDs() {
		c := w.Clients[id]
		if c.Closed || c.Token == "" || w.laneOf(c.Token) != lane {
			continue
		}
		for _, cw := range c.watches {
			if info, ok := w.N.InspectWatcher(c.ID, cw.ID); ok && (shared && !info.InGroup || !shared && !info.CatchUp) {
				continue // on the lane's other stream, which goes on
			}
			if !cw.Ended {
				w.recreating[cw] = true
			}
		}
	}
}

// authChecked records, for check (m), etcd's verdict on an upstream create
// of lane for [key, end), made when etcd took it up: it is the verdict on
// re-creating every watch of that lane and range that lost its upstream
// watch. A refused watch may get no event written after now.
func (w *World) authChecked(lane int, key, end []byte, refused bool) {
	norm := func(k []byte) string {
		if len(k) == 0 {
			return "\x00"
		}
		return string(k)
	}
	for _, id := range w.clientIDs() {
		c := w.Clients[id]
		if c.Closed || c.Token == "" || w.laneOf(c.Token) != lane {
			continue
		}
		for _, cw := range c.watches {
			if !w.recreating[cw] || norm(cw.Req.Key) != norm(key) || string(cw.Req.RangeEnd) != string(end) {
				continue
			}
			delete(w.recreating, cw)
			if !refused {
				delete(w.deniedAt, cw)
			} else if _, ok := w.deniedAt[cw]; !ok {
				w.deniedAt[cw] = w.Store.Rev
			}
		}
	}
}

// checkAuthEvent: check (m) for an event delivered to cw.
func (w *World) checkAuthEvent(c *Client, cw *ClientWatch, rev int64) {
	if at, ok := w.deniedAt[cw]; ok && rev > at {
		w.violate("stream %d watch %d (token %s): an event at %d, written after etcd refused to re-create its watch at %d (the token could not watch %q)", c.ID, cw.ID, c.Token, rev, at, cw.Req.Key)
	}
}

// checkAuthCancel: check (o) for a cancel of a created watch.
func (w *World) checkAuthCancel(c *Client, cw *ClientWatch, r *pb.WatchResponse) {
	if c.Token == "" || (r.CancelReason != rpctypes.ErrGRPCPermissionDenied.Error() && r.CancelReason != rpctypes.ErrGRPCInvalidAuthToken.Error()) {
		return
	}
	w.Coverage.AuthCancelled++
	if lane := w.laneOf(c.Token); w.refusedSent[lane] <= cw.createdAt {
		w.violate("stream %d watch %d (token %s): created, then ended for auth (%q) though etcd refused no upstream create of its lane sent since", c.ID, cw.ID, c.Token, r.CancelReason)
	}
}

// tokenEnded: check (n) for a stream ended for its token.
func (w *World) tokenEnded(c *Client, err error) bool {
	if !errors.Is(err, node.ErrLaneTokenRefused) {
		return false
	}
	if w.refusals[c.Token] == 0 {
		w.violate("stream %d ended for its token %q, which etcd never refused", c.ID, c.Token)
	}
	return true
}
