package keyspace

import (
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// The functions below translate etcd's protocol messages in place: requests
// on their way to etcd get the prefix, responses on their way back lose it.
// They are no-ops for the empty prefix. Each takes ownership of its argument.

// RangeRequest prefixes a range request.
func (x Prefix) RangeRequest(r *pb.RangeRequest) {
	if x.Empty() || r == nil {
		return
	}
	r.Key, r.RangeEnd = x.Range(r.Key, r.RangeEnd)
}

// PutRequest prefixes a put request.
func (x Prefix) PutRequest(r *pb.PutRequest) {
	if x.Empty() || r == nil {
		return
	}
	r.Key = x.Key(r.Key)
}

// DeleteRangeRequest prefixes a delete-range request.
func (x Prefix) DeleteRangeRequest(r *pb.DeleteRangeRequest) {
	if x.Empty() || r == nil {
		return
	}
	r.Key, r.RangeEnd = x.Range(r.Key, r.RangeEnd)
}

// TxnRequest prefixes every compare and every operation of a transaction,
// nested transactions included.
func (x Prefix) TxnRequest(r *pb.TxnRequest) {
	if x.Empty() || r == nil {
		return
	}
	for _, c := range r.Compare {
		if c != nil {
			c.Key, c.RangeEnd = x.Range(c.Key, c.RangeEnd)
		}
	}
	x.requestOps(r.Success)
	x.requestOps(r.Failure)
}

func (x Prefix) requestOps(ops []*pb.RequestOp) {
	for _, op := range ops {
		switch v := op.GetRequest().(type) {
		case *pb.RequestOp_RequestRange:
			x.RangeRequest(v.RequestRange)
		case *pb.RequestOp_RequestPut:
			x.PutRequest(v.RequestPut)
		case *pb.RequestOp_RequestDeleteRange:
			x.DeleteRangeRequest(v.RequestDeleteRange)
		case *pb.RequestOp_RequestTxn:
			x.TxnRequest(v.RequestTxn)
		}
	}
}

// WatchCreateRequest prefixes a watch creation request.
func (x Prefix) WatchCreateRequest(r *pb.WatchCreateRequest) {
	if x.Empty() || r == nil {
		return
	}
	r.Key, r.RangeEnd = x.WatchRange(r.Key, r.RangeEnd)
}

// KeyValue strips the prefix from a key-value pair.
func (x Prefix) KeyValue(kv *mvccpb.KeyValue) {
	if kv != nil {
		kv.Key = x.Strip(kv.Key)
	}
}

func (x Prefix) keyValues(kvs []*mvccpb.KeyValue) {
	for _, kv := range kvs {
		x.KeyValue(kv)
	}
}

// RangeResponse strips the prefix from the keys of a range response.
func (x Prefix) RangeResponse(r *pb.RangeResponse) {
	if x.Empty() || r == nil {
		return
	}
	x.keyValues(r.Kvs)
}

// RangeStreamResponse strips the prefix from one chunk of a range stream.
func (x Prefix) RangeStreamResponse(r *pb.RangeStreamResponse) {
	if x.Empty() || r == nil {
		return
	}
	x.RangeResponse(r.RangeResponse)
}

// PutResponse strips the prefix from the previous key-value of a put.
func (x Prefix) PutResponse(r *pb.PutResponse) {
	if x.Empty() || r == nil {
		return
	}
	x.KeyValue(r.PrevKv)
}

// DeleteRangeResponse strips the prefix from the deleted key-values.
func (x Prefix) DeleteRangeResponse(r *pb.DeleteRangeResponse) {
	if x.Empty() || r == nil {
		return
	}
	x.keyValues(r.PrevKvs)
}

// TxnResponse strips the prefix from every response of a transaction,
// nested transactions included.
func (x Prefix) TxnResponse(r *pb.TxnResponse) {
	if x.Empty() || r == nil {
		return
	}
	for _, op := range r.Responses {
		switch v := op.GetResponse().(type) {
		case *pb.ResponseOp_ResponseRange:
			x.RangeResponse(v.ResponseRange)
		case *pb.ResponseOp_ResponsePut:
			x.PutResponse(v.ResponsePut)
		case *pb.ResponseOp_ResponseDeleteRange:
			x.DeleteRangeResponse(v.ResponseDeleteRange)
		case *pb.ResponseOp_ResponseTxn:
			x.TxnResponse(v.ResponseTxn)
		}
	}
}

// WatchResponse drops events whose key lies outside the prefix and strips
// the prefix from the rest (and from their previous key-values).
func (x Prefix) WatchResponse(r *pb.WatchResponse) {
	if x.Empty() || r == nil || len(r.Events) == 0 {
		return
	}
	kept := r.Events[:0]
	for _, ev := range r.Events {
		if ev == nil || ev.Kv == nil || !x.Contains(ev.Kv.Key) {
			continue
		}
		x.KeyValue(ev.Kv)
		x.KeyValue(ev.PrevKv)
		kept = append(kept, ev)
	}
	r.Events = kept
}

// LeaseKeys keeps the attached keys of a lease that lie inside the prefix,
// stripped, and reports whether every key was inside.
func (x Prefix) LeaseKeys(keys [][]byte) (inside [][]byte, all bool) {
	if x.Empty() {
		return keys, true
	}
	all = true
	inside = keys[:0]
	for _, k := range keys {
		if !x.Contains(k) {
			all = false
			continue
		}
		inside = append(inside, x.Strip(k))
	}
	return inside, all
}
