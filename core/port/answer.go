package port

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// CallID names a client's unary read waiting for the read cache's answer.
type CallID uint64

// Answer is the read cache's answer to a call: Resp is the response to
// give the client (shared with the cache: the shell must not change it),
// or nil when the call must be forwarded to etcd.
type Answer struct {
	Call CallID
	Resp *pb.RangeResponse
}

func (a Answer) String() string {
	if a.Resp == nil {
		return fmt.Sprintf("call %d: forward", a.Call)
	}
	return fmt.Sprintf("call %d: cached at revision %d", a.Call, a.Resp.GetHeader().GetRevision())
}

// Answer hands the shell the read cache's answer to a call.
func (o *Outbox) Answer(a Answer) { o.answers = append(o.answers, a) }
