package shell

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
)

// identities tells which etcd user an auth token belongs to, so that watch
// streams of one user share a lane (see core/node/lanes.go) whatever token
// each carries. A token's user is known when etcd issued it through this
// proxy: Authenticate passes here, and learn records what etcd answered.
// Nothing else is trusted to name a user (a JWT's username claim could be
// forged, and a forged token opening a user's lane first would have etcd
// refuse that lane's watches): a token of unknown user is its own
// identity, and shares only with streams carrying the same token. Every
// watch a stream creates is first read with the stream's own token, which
// etcd checks, whatever the lane.
type identities struct {
	mu    sync.Mutex
	users map[string]string // token -> user
	order []string          // tokens in the order learnt, for the bound
	next  int               // where the next learnt token goes once full
}

// maxIdentities bounds the tokens remembered (about 100 bytes each).
const maxIdentities = 1 << 16

func newIdentities() *identities { return &identities{users: map[string]string{}} }

// learn records that etcd issued token to user.
func (x *identities) learn(token, user string) {
	if token == "" || user == "" {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.users[token]; ok {
		return
	}
	if len(x.order) < maxIdentities {
		x.order = append(x.order, token)
	} else {
		delete(x.users, x.order[x.next])
		x.order[x.next] = token
		x.next = (x.next + 1) % maxIdentities
	}
	x.users[token] = user
}

// of returns token's identity for the node ("" for no token).
func (x *identities) of(token string) string {
	if token == "" {
		return ""
	}
	x.mu.Lock()
	user, ok := x.users[token]
	x.mu.Unlock()
	if ok {
		return "user:" + user
	}
	sum := sha256.Sum256([]byte(token))
	return "token:" + hex.EncodeToString(sum[:8])
}
