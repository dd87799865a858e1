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
	if plain {
		if b := o.joinable(f.Revision); b != nil {
			b.req.For |= Machines(m)
			return b.req.ID
		}
	}
	o.nextFetch++
	f.ID, f.For = o.nextFetch, Machines(m)
	ft := &fetch{req: f}
	o.fetches[f.ID] = ft
	o.fetchIDs = append(o.fetchIDs, f.ID)
	switch {
	case plain && f.Revision == 0:
		o.batch = ft
	case plain:
		if o.batchAt == nil {
			o.batchAt = map[int64]*fetch{}
		}
		o.batchAt[f.Revision] = ft
	}
	return f.ID
}

// joinable is this step's plain fetch at rev (0: the current revision),
// nil if there is none.
func (o *Outbox) joinable(rev int64) *fetch {
	if rev == 0 {
		return o.batch
	}
	return o.batchAt[rev]
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
	if rev := f.req.Revision; rev != 0 && o.batchAt[rev] == f {
		delete(o.batchAt, rev)
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
