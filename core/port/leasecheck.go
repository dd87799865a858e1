package port

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// LeaseCheck asks the shell whether lease ID belongs to the proxy's
// namespace: etcd's LeaseTimeToLive with the lease's keys, judged by the
// namespace's rule (every key attached lies inside the prefix; a lease
// with no keys qualifies). The answer comes back as a LeaseCheckResult for
// the same ID.
type LeaseCheck struct{ ID int64 }

func (c LeaseCheck) String() string { return fmt.Sprintf("check lease %d", c.ID) }

// LeaseCheckResult is the answer to a LeaseCheck (or the same verdict
// learned from a LeaseTimeToLive or LeaseRevoke the shell checked itself).
// Err is set when etcd could not be asked; then nothing else is.
type LeaseCheckResult struct {
	Header *pb.ResponseHeader
	Found  bool  // etcd has the lease
	Mine   bool  // it belongs to the namespace (Found only)
	TTL    int64 // its granted TTL, seconds (Found only)
	Err    error
}

func (r LeaseCheckResult) String() string {
	switch {
	case r.Err != nil:
		return fmt.Sprintf("error %q", r.Err.Error())
	case !r.Found:
		return "not found"
	case r.Mine:
		return fmt.Sprintf("mine ttl=%d", r.TTL)
	}
	return fmt.Sprintf("foreign ttl=%d", r.TTL)
}

// LeaseCheck hands the shell a lease ownership check.
func (o *Outbox) LeaseCheck(c LeaseCheck) { o.leaseChecks = append(o.leaseChecks, c) }
