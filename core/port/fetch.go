package port

import (
	"bytes"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Fetch asks for a revision fetch on behalf of machine m (f's ID and For
// are filled in here) and returns its ID. A plain request (no token, the
// single key "\x00") joins the plain fetch at the same revision of this
// step if there is one: any number of callers, whichever machine they
// belong to, cost one Range. That holds for the current revision (0) and
// for a given one (watches starting at a revision, whose fetch learns
// whether it is compacted: Kubernetes-style watchers all start at the
// revision of their list, and 100,000 of them cost 100,000 Ranges
// otherwise). The fetch is sent after every request of the step that
// joined it, so its answer is as recent for each of them as a Range of
// its own.
func (o *Outbox) Fetch(m Machine, f Fetch) FetchID {
	plain := f.Token == "" && len(f.End) == 0 && bytes.Equal(f.Key, []byte{0})
	if b := o.batches[f.Revision]; plain && b != nil {
		b.req.For |= Machines(m)
		return b.req.ID
	}
	o.nextFetch++
	f.ID, f.For = o.nextFetch, Machines(m)
	ft := &fetch{req: f}
	o.fetches[f.ID] = ft
	o.fetchIDs = append(o.fetchIDs, f.ID)
	if plain {
		o.batches[f.Revision] = ft
	}
	return f.ID
}

// Joinable reports whether fetch id is not handed out yet (this step's
// current-revision fetch): its answer is etcd's revision after anything
// that happened up to now.
func (o *Outbox) Joinable(id FetchID) bool {
	b := o.batches[0]
	return b != nil && b.req.ID == id
}

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
	if o.batches[f.req.Revision] == f {
		delete(o.batches, f.req.Revision)
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
