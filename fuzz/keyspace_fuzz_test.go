package fuzz

import (
	"bytes"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/etcdproxy/etcdproxy/core/keyspace"
)

// isEnd reports whether k is etcd's "\x00" range end.
func isEnd(k []byte) bool { return len(k) == 1 && k[0] == 0 }

// inBounds reports whether z lies in [p, end), an end of "\x00" meaning
// +infinity.
func inBounds(z, p, end []byte) bool {
	return bytes.Compare(z, p) >= 0 && (isEnd(end) || bytes.Compare(z, end) < 0)
}

// refPrefixEnd is an independent reference for keyspace.PrefixEnd: drop
// trailing 0xff bytes, then increment the last byte left; nothing left means
// the prefix runs to the end of the keyspace ("\x00").
func refPrefixEnd(p []byte) []byte {
	n := len(p)
	for n > 0 && p[n-1] == 0xff {
		n--
	}
	if n == 0 {
		return []byte{0}
	}
	end := bytes.Clone(p[:n])
	end[n-1]++
	return end
}

// checkPair checks the translation of the client range [key, end) to the
// etcd range [k, e) under prefix p (non-empty): [k, e) must lie inside
// [p, PrefixEnd(p)), empty keys must stay empty (etcd rejects them), an
// empty end must stay empty (single key), "\x00" must become the prefix end,
// and key < end must hold after the translation exactly when it held before.
func checkPair(t *testing.T, what string, p, key, end, k, e []byte) {
	t.Helper()
	pend := refPrefixEnd(p)

	if len(key) == 0 {
		if len(k) != 0 {
			t.Fatalf("%s: empty key became %q", what, k)
		}
	} else {
		if !inBounds(k, p, pend) {
			t.Fatalf("%s: key %q -> %q outside [%q, %q)", what, key, k, p, pend)
		}
		if !bytes.HasPrefix(k, p) || !bytes.Equal(k[len(p):], key) {
			t.Fatalf("%s: key %q -> %q is not prefix+key", what, key, k)
		}
	}

	switch {
	case len(end) == 0:
		if len(e) != 0 {
			t.Fatalf("%s: single key %q got range end %q", what, key, e)
		}
	case isEnd(end):
		if !bytes.Equal(e, pend) {
			t.Fatalf("%s: end \\x00 -> %q, want prefix end %q", what, e, pend)
		}
	default:
		if isEnd(e) {
			t.Fatalf("%s: end %q became \\x00 (end of keyspace)", what, end)
		}
		if !bytes.HasPrefix(e, p) || !bytes.Equal(e[len(p):], end) {
			t.Fatalf("%s: end %q -> %q is not prefix+end", what, end, e)
		}
		if c1, c2 := bytes.Compare(key, end), bytes.Compare(k, e); c1 != c2 {
			t.Fatalf("%s: order changed: cmp(%q, %q)=%d, cmp(%q, %q)=%d", what, key, end, c1, k, e, c2)
		}
	}

	// Containment of the whole interval: its end may not pass the prefix end.
	if len(e) > 0 && !isEnd(pend) {
		if isEnd(e) || bytes.Compare(e, pend) > 0 {
			t.Fatalf("%s: range [%q, %q) runs past prefix end %q", what, k, e, pend)
		}
	}
}

func FuzzNamespaceRange(f *testing.F) {
	for _, s := range [][3]string{
		{"p/", "a", ""},
		{"p/", "a", "\x00"},
		{"p/", "a", "b"},
		{"p/", "b", "a"},
		{"p/", "", ""},
		{"p/", "", "\x00"},
		{"p/", "", "b"},
		{"p/", "p/", "\x00"},
		{"p/", "a\xff", "\x00"},
		{"p/", "a", "\x00\x00"},
		{"a\xff", "x", "\x00"},
		{"a\xff\xff", "\xff", "\xff\xff"},
		{"\xff", "", "\x00"},
		{"\xff\xff", "\xff", "\x00"},
		{"\x00", "\x00", "\x00"},
		{"\x00\xff", "\x00", "\x01"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), []byte(s[2]))
	}
	f.Fuzz(func(t *testing.T, prefix, key, end []byte) {
		if len(prefix) == 0 {
			t.Skip("the empty prefix translates nothing")
		}
		p := bytes.Clone(prefix)
		if got, want := keyspace.PrefixEnd(p), refPrefixEnd(p); !bytes.Equal(got, want) {
			t.Fatalf("PrefixEnd(%q) = %q, want %q", p, got, want)
		}
		x := keyspace.New(string(prefix))
		if s, e := x.Bounds(); !bytes.Equal(s, p) || !bytes.Equal(e, refPrefixEnd(p)) {
			t.Fatalf("Bounds() = [%q, %q), want [%q, %q)", s, e, p, refPrefixEnd(p))
		}

		k, e := x.Range(bytes.Clone(key), bytes.Clone(end))
		checkPair(t, "Range", p, key, end, k, e)

		wkey := key
		if len(wkey) == 0 {
			wkey = []byte{0} // etcd's reading of an empty watch key
		}
		wk, we := x.WatchRange(bytes.Clone(key), bytes.Clone(end))
		checkPair(t, "WatchRange", p, wkey, end, wk, we)
		if len(wk) == 0 {
			t.Fatalf("WatchRange(%q, %q) left the key empty", key, end)
		}

		if len(key) > 0 {
			tk := x.Key(bytes.Clone(key))
			if !x.Contains(tk) {
				t.Fatalf("Contains(Key(%q)) = false", key)
			}
			if got := x.Strip(tk); !bytes.Equal(got, key) {
				t.Fatalf("Strip(Key(%q)) = %q", key, got)
			}
		}
		if j := x.Join(bytes.Clone(key)); !bytes.HasPrefix(j, p) || !bytes.Equal(x.Strip(j), key) {
			t.Fatalf("Join(%q) = %q does not round-trip under %q", key, j, p)
		}

		// An etcd key is inside exactly when it starts with p; keys outside
		// are left unchanged by Strip.
		if got, want := x.Contains(key), bytes.HasPrefix(key, p); got != want {
			t.Fatalf("Contains(%q) = %v under prefix %q, want %v", key, got, p, want)
		}
		if !bytes.HasPrefix(key, p) {
			if got := x.Strip(bytes.Clone(key)); !bytes.Equal(got, key) {
				t.Fatalf("Strip(%q) = %q for a key outside prefix %q", key, got, p)
			}
		}
	})
}

// txnBuilder turns fuzz bytes into a transaction. Running out of bytes
// yields zeros, so every input builds some request.
type txnBuilder struct{ data []byte }

func (r *txnBuilder) byte() byte {
	if len(r.data) == 0 {
		return 0
	}
	c := r.data[0]
	r.data = r.data[1:]
	return c
}

// key draws a key or range end: empty, "\x00", a run of 0xff, or up to eight
// bytes taken from the input.
func (r *txnBuilder) key() []byte {
	c := r.byte()
	switch c % 4 {
	case 0:
		return nil
	case 1:
		return []byte{0}
	case 2:
		return bytes.Repeat([]byte{0xff}, int(c>>2)%3+1)
	default:
		n := int(c>>2)%8 + 1
		k := make([]byte, n)
		for i := range k {
			k[i] = r.byte()
		}
		return k
	}
}

func (r *txnBuilder) compare() *pb.Compare {
	c := &pb.Compare{
		Result:   pb.Compare_CompareResult(r.byte() % 4),
		Key:      r.key(),
		RangeEnd: r.key(),
	}
	switch r.byte() % 3 {
	case 0:
		c.Target, c.TargetUnion = pb.Compare_VERSION, &pb.Compare_Version{Version: int64(r.byte())}
	case 1:
		c.Target, c.TargetUnion = pb.Compare_MOD, &pb.Compare_ModRevision{ModRevision: int64(r.byte())}
	default:
		c.Target, c.TargetUnion = pb.Compare_VALUE, &pb.Compare_Value{Value: r.key()}
	}
	return c
}

func (r *txnBuilder) op(depth int) *pb.RequestOp {
	switch kind := r.byte() % 5; {
	case kind == 0:
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{
			Key: r.key(), RangeEnd: r.key(), Limit: int64(r.byte()),
		}}}
	case kind == 1:
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: r.key(), Value: r.key(), PrevKv: r.byte()%2 == 0,
		}}}
	case kind == 2:
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{
			Key: r.key(), RangeEnd: r.key(),
		}}}
	case kind == 3 && depth < 3:
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r.txn(depth + 1)}}
	default:
		return &pb.RequestOp{} // an op with no request
	}
}

func (r *txnBuilder) txn(depth int) *pb.TxnRequest {
	t := &pb.TxnRequest{}
	for n := r.byte() % 4; n > 0; n-- {
		t.Compare = append(t.Compare, r.compare())
	}
	for n := r.byte() % 4; n > 0; n-- {
		t.Success = append(t.Success, r.op(depth))
	}
	for n := r.byte() % 3; n > 0; n-- {
		t.Failure = append(t.Failure, r.op(depth))
	}
	return t
}

// buildTxn builds the fuzzed transaction; the top level always carries a
// nested transaction so that the recursion is exercised on every input.
func buildTxn(data []byte) *pb.TxnRequest {
	r := &txnBuilder{data: data}
	t := r.txn(0)
	nested := r.txn(1)
	if len(nested.Compare) == 0 {
		nested.Compare = []*pb.Compare{r.compare()}
	}
	t.Success = append(t.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: nested}})
	return t
}

// txnChecker walks the original and the translated transaction side by
// side, checks every key and range, and writes the original keys back into
// the translated request so that the caller can verify that nothing else
// changed.
type txnChecker struct {
	t     *testing.T
	p     []byte
	pairs int
}

func (c *txnChecker) pair(what string, key, end []byte, k, e *[]byte) {
	c.t.Helper()
	checkPair(c.t, what, c.p, key, end, *k, *e)
	*k, *e = key, end
	c.pairs++
}

func (c *txnChecker) txn(orig, got *pb.TxnRequest) {
	c.t.Helper()
	if len(orig.Compare) != len(got.Compare) || len(orig.Success) != len(got.Success) || len(orig.Failure) != len(got.Failure) {
		c.t.Fatalf("transaction shape changed:\n orig: %s\n  got: %s", prototext.Format(orig), prototext.Format(got))
	}
	for i, oc := range orig.Compare {
		gc := got.Compare[i]
		c.pair("compare", oc.Key, oc.RangeEnd, &gc.Key, &gc.RangeEnd)
	}
	c.ops(orig.Success, got.Success)
	c.ops(orig.Failure, got.Failure)
}

func (c *txnChecker) ops(orig, got []*pb.RequestOp) {
	c.t.Helper()
	for i, o := range orig {
		g := got[i]
		switch ov := o.GetRequest().(type) {
		case *pb.RequestOp_RequestRange:
			gr := g.GetRequestRange()
			if gr == nil {
				c.t.Fatalf("op %d: range request became %T", i, g.GetRequest())
			}
			c.pair("range", ov.RequestRange.Key, ov.RequestRange.RangeEnd, &gr.Key, &gr.RangeEnd)
		case *pb.RequestOp_RequestPut:
			gp := g.GetRequestPut()
			if gp == nil {
				c.t.Fatalf("op %d: put request became %T", i, g.GetRequest())
			}
			var none []byte
			c.pair("put", ov.RequestPut.Key, nil, &gp.Key, &none)
		case *pb.RequestOp_RequestDeleteRange:
			gd := g.GetRequestDeleteRange()
			if gd == nil {
				c.t.Fatalf("op %d: delete request became %T", i, g.GetRequest())
			}
			c.pair("delete", ov.RequestDeleteRange.Key, ov.RequestDeleteRange.RangeEnd, &gd.Key, &gd.RangeEnd)
		case *pb.RequestOp_RequestTxn:
			gt := g.GetRequestTxn()
			if gt == nil {
				c.t.Fatalf("op %d: txn request became %T", i, g.GetRequest())
			}
			c.txn(ov.RequestTxn, gt)
		case nil:
			if g.GetRequest() != nil {
				c.t.Fatalf("op %d: empty op became %T", i, g.GetRequest())
			}
		}
	}
}

func FuzzNamespaceTxn(f *testing.F) {
	f.Add([]byte("p/"), []byte{})
	f.Add([]byte("p/"), []byte{3, 1, 7, 'a', 'b', 1, 0, 3, 0, 11, 'k', 'e', 'y', 2, 1, 2, 3, 1, 6})
	f.Add([]byte("a\xff"), []byte{2, 1, 1, 1, 0, 3, 0, 9, 'x', 'y', 1, 0, 3, 3, 1, 1, 2, 0, 0, 1})
	f.Add([]byte("\xff"), []byte{1, 0, 1, 5, 0, 2, 3, 3, 0, 2, 1, 1, 1, 0})
	f.Add([]byte("\xff\xff"), []byte{3, 3, 0, 1, 3, 3, 3, 1, 0, 0, 0, 1, 0, 2, 0, 1})
	f.Add([]byte("\x00"), []byte{1, 1, 3, 0, 2, 2, 1, 1, 0, 4, 4, 4})
	f.Add([]byte("ns/\xff\x00"), []byte{0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 0xf7, 0xf6, 0xf5})
	f.Fuzz(func(t *testing.T, prefix, data []byte) {
		if len(prefix) == 0 {
			t.Skip("the empty prefix translates nothing")
		}
		req := buildTxn(data)
		orig := proto.Clone(req).(*pb.TxnRequest)

		keyspace.New(string(prefix)).TxnRequest(req)

		c := &txnChecker{t: t, p: bytes.Clone(prefix)}
		c.txn(orig, req)
		if c.pairs == 0 {
			t.Fatal("no key was checked: the nested transaction must carry a compare")
		}
		// With the original keys written back, the request must be the one
		// the client sent: the translation touches keys and ranges only.
		if !proto.Equal(req, orig) {
			t.Fatalf("translation changed more than keys:\n orig: %s\n  got: %s", prototext.Format(orig), prototext.Format(req))
		}
	})
}
