package port

import (
	"bytes"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Fetch asks for a revision fetch on behalf of machine m (f's ID and For
// are filled in here) and returns its ID. A plain current-revision request
// (no token, no revision, the single key "\x00") joins the one such fetch
// of this step if there is one: any number of callers, whichever machine
// they belong to, cost one Range.
func (o *Outbox) Fetch(m Machine, f Fetch) FetchID {
	plain := f.Token == "" && f.Revision == 0 && len(f.End) == 0 && bytes.Equal(f.Key, []byte{0})
	if plain && o.batch != nil {
		o.batch.req.For |= Machines(m)
		return o.batch.req.ID
	}
	o.nextFetch++
	f.ID, f.For = o.nextFetch, Machines(m)
	ft := &fetch{req: f}
	o.fetches[f.ID] = ft
	o.fetchIDs = append(o.fetchIDs, f.ID)
	if plain {
		o.batch = ft
	}
	return f.ID
}

// Joinable reports whether fetch id is not handed out yet (this step's
// current-revision fetch): its answer is etcd's revision after anything
// that happened up to now.
func (o *Outbox) Joinable(id FetchID) bool { return o.batch != nil && o.batch.req.ID == id }

// Fetched takes the answer to a fetch. It returns the machines to hand the
// answer to, or false when there is nothing to hand on: the fetch is
// unknown, or it failed for a transport reason and will be tried again.
func (o *Outbox) Fetched(id FetchID, r FetchResult) (Machines, bool) {
	f := o.fetches[id]
	if f == nil || f.retrying {
		return 0, false
	}
	if retryable(r.Err) {
		f.retrying, f.retryAt = true, o.now.Add(o.cfg.RetryInterval)
		return 0, false
	}
	delete(o.fetches, id)
	if o.batch == f {
		o.batch = nil
	}
	return f.req.For, true
}

// retryable tells transport trouble, worth another try, from etcd's
// verdicts on a request. An error that is no gRPC status counts as Unknown.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal, codes.ResourceExhausted:
		return true
	}
	return false
}
