package keyspace

import (
	"bytes"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"
)

// b turns a string literal into a key; q quotes a key for failure messages.
func b(s string) []byte { return []byte(s) }

func q(k []byte) string {
	if k == nil {
		return "nil"
	}
	return fmt.Sprintf("%q", k)
}

// isEnd reports whether k is etcd's "\x00" range end ("to the end of the
// keyspace" / "every key from key on").
func isEnd(k []byte) bool { return len(k) == 1 && k[0] == 0 }

// inBounds reports whether etcd key z lies in [p, end), where an end of
// "\x00" means +infinity.
func inBounds(z, p, end []byte) bool {
	return bytes.Compare(z, p) >= 0 && (isEnd(end) || bytes.Compare(z, end) < 0)
}

func assertProto(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s:\n got: %s\nwant: %s", what, prototext.Format(got), prototext.Format(want))
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ p, want string }{
		{"p/", "p0"},
		{"a", "b"},
		{"abc", "abd"},
		{"a\xff", "b"},
		{"a\xff\xff", "b"},
		{"ab\xff", "ac"},
		{"a\xfe", "a\xff"},
		{"a\xfe\xff", "a\xff"},
		{"\x00", "\x01"},
		{"a\x00", "a\x01"},
		{"\xfe", "\xff"},
		{"\xff", "\x00"},
		{"\xff\xff", "\x00"},
		{"\xff\xff\xff", "\x00"},
		{"\xffa", "\xffb"},
		{"\xffa\xff", "\xffb"},
		{"", "\x00"},
	} {
		in := b(tc.p)
		got := PrefixEnd(in)
		if !bytes.Equal(got, b(tc.want)) {
			t.Errorf("PrefixEnd(%q) = %s, want %q", tc.p, q(got), tc.want)
		}
		if !bytes.Equal(in, b(tc.p)) {
			t.Errorf("PrefixEnd(%q) modified its argument to %s", tc.p, q(in))
		}
		// The result must be a copy: writing to it must not reach the input.
		if len(got) > 0 && len(in) > 0 {
			got[0] ^= 0x55
			if !bytes.Equal(in, b(tc.p)) {
				t.Errorf("PrefixEnd(%q) result aliases its argument", tc.p)
			}
		}
	}
}

// naivePrefixEnd is the plain "increment the last byte with carry" end that
// keeps the prefix's length (as etcd's client namespace package computes
// it): for "a\xff" it gives "b\x00".
func naivePrefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i]++; end[i] != 0 {
			return end
		}
	}
	return []byte{0}
}

// refPrefixEnd is an independent reference for PrefixEnd, written the other
// way round: drop trailing 0xff bytes, then increment the last byte left.
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

// TestNaivePrefixEndAdmitsForeignKey documents why PrefixEnd drops trailing
// 0xff bytes: the naive end of "a\xff" is "b\x00", and the interval
// ["a\xff", "b\x00") contains the key "b", which is not under "a\xff".
func TestNaivePrefixEndAdmitsForeignKey(t *testing.T) {
	p := b("a\xff")
	foreign := b("b")

	naive := naivePrefixEnd(p)
	if !bytes.Equal(naive, b("b\x00")) {
		t.Fatalf("naivePrefixEnd(%q) = %s, want \"b\\x00\"", p, q(naive))
	}
	if bytes.HasPrefix(foreign, p) {
		t.Fatalf("test key %q must be outside prefix %q", foreign, p)
	}
	if !inBounds(foreign, p, naive) {
		t.Fatalf("naive interval [%q, %q) should admit %q; the demonstration is broken", p, naive, foreign)
	}

	end := PrefixEnd(p)
	if !bytes.Equal(end, b("b")) {
		t.Fatalf("PrefixEnd(%q) = %s, want \"b\"", p, q(end))
	}
	if inBounds(foreign, p, end) {
		t.Errorf("[%q, %q) admits %q, which is outside the prefix", p, end, foreign)
	}

	// The same through the translation a client would trigger: "every key
	// from x on" under prefix "a\xff" must stop before "b".
	k, e := New(string(p)).Range(b("x"), b("\x00"))
	if !bytes.Equal(k, b("a\xffx")) || !bytes.Equal(e, b("b")) {
		t.Fatalf("Range(x, \\x00) under %q = [%s, %s), want [\"a\\xffx\", \"b\")", p, q(k), q(e))
	}
	if inBounds(foreign, k, e) {
		t.Errorf("translated range [%q, %q) admits %q", k, e, foreign)
	}
}

// TestPrefixEndExact checks, over every key of up to four bytes from a small
// alphabet rich in 0x00 and 0xff, that a key starts with p exactly when it
// lies in [p, PrefixEnd(p)): the end neither admits a foreign key nor cuts
// off a key of the prefix.
func TestPrefixEndExact(t *testing.T) {
	alphabet := []byte{0x00, 0x01, 'a', 0xfe, 0xff}
	var keys [][]byte
	var grow func(k []byte, n int)
	grow = func(k []byte, n int) {
		keys = append(keys, bytes.Clone(k))
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			grow(append(k, c), n-1)
		}
	}
	grow(nil, 4)

	checked := 0
	for _, p := range keys {
		if len(p) == 0 || len(p) > 3 {
			continue
		}
		end := PrefixEnd(p)
		if !isEnd(end) && bytes.HasPrefix(end, p) {
			t.Errorf("PrefixEnd(%q) = %q starts with the prefix", p, end)
		}
		for _, z := range keys {
			if has, in := bytes.HasPrefix(z, p), inBounds(z, p, end); has != in {
				t.Fatalf("prefix %q, end %q, key %q: HasPrefix=%v but in [p,end)=%v", p, end, z, has, in)
			}
			checked++
		}
	}
	if checked < 10000 {
		t.Fatalf("only %d combinations checked", checked)
	}
}

func TestNewBoundsEmptyString(t *testing.T) {
	x := New("p/")
	if x.Empty() {
		t.Error(`New("p/").Empty() = true`)
	}
	if x.String() != "p/" {
		t.Errorf(`String() = %q, want "p/"`, x.String())
	}
	if s, e := x.Bounds(); !bytes.Equal(s, b("p/")) || !bytes.Equal(e, b("p0")) {
		t.Errorf("Bounds() = [%s, %s), want [\"p/\", \"p0\")", q(s), q(e))
	}
	if s, e := New("\xff\xff").Bounds(); !bytes.Equal(s, b("\xff\xff")) || !bytes.Equal(e, b("\x00")) {
		t.Errorf("Bounds() of all-0xff prefix = [%s, %s), want [\"\\xff\\xff\", \"\\x00\")", q(s), q(e))
	}

	for _, z := range []Prefix{New(""), {}} {
		if !z.Empty() {
			t.Error("empty prefix: Empty() = false")
		}
		if z.String() != "" {
			t.Errorf("empty prefix: String() = %q", z.String())
		}
	}
}

func TestKeyAndJoin(t *testing.T) {
	x := New("p/")
	for _, tc := range []struct {
		in, key, join string
	}{
		{"", "", "p/"}, // Key leaves empty keys for etcd to reject; Join prefixes them.
		{"a", "p/a", "p/a"},
		{"\x00", "p/\x00", "p/\x00"},
		{"\xff", "p/\xff", "p/\xff"},
		{"p/", "p/p/", "p/p/"}, // no "already prefixed" shortcut
	} {
		if got := x.Key(b(tc.in)); !bytes.Equal(got, b(tc.key)) {
			t.Errorf("Key(%q) = %s, want %q", tc.in, q(got), tc.key)
		}
		if got := x.Join(b(tc.in)); !bytes.Equal(got, b(tc.join)) {
			t.Errorf("Join(%q) = %s, want %q", tc.in, q(got), tc.join)
		}
	}

	// Join must build a fresh slice each time, never appending into the
	// prefix's own storage.
	j1 := x.Join(b("a"))
	j2 := x.Join(b("b"))
	j1[0] = 'X'
	if !bytes.Equal(j2, b("p/b")) || x.String() != "p/" {
		t.Errorf("Join results share storage: j2 = %q, prefix = %q", j2, x.String())
	}
	if got := x.Join(nil); !bytes.Equal(got, b("p/")) {
		t.Errorf("Join(nil) = %s, want \"p/\"", q(got))
	}

	var z Prefix
	if got := z.Join(nil); len(got) != 0 {
		t.Errorf("empty prefix: Join(nil) = %s, want empty", q(got))
	}
	if got := z.Join(b("n")); !bytes.Equal(got, b("n")) {
		t.Errorf("empty prefix: Join(n) = %s, want \"n\"", q(got))
	}
	if got := z.Key(b("k")); !bytes.Equal(got, b("k")) {
		t.Errorf("empty prefix: Key(k) = %s, want \"k\"", q(got))
	}
}

type rangeCase struct {
	prefix, key, end string
	wantKey, wantEnd string
}

func TestRange(t *testing.T) {
	for _, tc := range []rangeCase{
		// Empty end: the single key.
		{"p/", "a", "", "p/a", ""},
		// "\x00": every key from key on, i.e. up to the end of the prefix.
		{"p/", "a", "\x00", "p/a", "p0"},
		{"p/", "\x00", "\x00", "p/\x00", "p0"},
		// Ordinary ranges are prefixed on both sides.
		{"p/", "a", "b", "p/a", "p/b"},
		{"p/", "a", "\x00\x00", "p/a", "p/\x00\x00"}, // only exactly "\x00" is special
		{"p/", "\x01", "\x00", "p/\x01", "p0"},
		// Keys and ends ending in 0xff.
		{"p/", "a\xff", "", "p/a\xff", ""},
		{"p/", "a\xff", "b\xff", "p/a\xff", "p/b\xff"},
		{"p/", "a\xff", "\x00", "p/a\xff", "p0"},
		{"p/", "\xff", "\xff\xff", "p/\xff", "p/\xff\xff"},
		// Prefixes ending in 0xff: the end is truncated, not "b\x00".
		{"a\xff", "x", "\x00", "a\xffx", "b"},
		{"a\xff\xff", "x", "\x00", "a\xff\xffx", "b"},
		{"a\xff", "\xff", "", "a\xff\xff", ""},
		// All-0xff prefixes run to the end of the keyspace.
		{"\xff", "x", "\x00", "\xffx", "\x00"},
		{"\xff\xff", "x", "\x00", "\xff\xffx", "\x00"},
		{"\xff\xff", "x", "y", "\xff\xffx", "\xff\xffy"},
		// A prefix with a NUL byte.
		{"\x00", "k", "\x00", "\x00k", "\x01"},
		// A client key equal to the prefix is just another key under it.
		{"p/", "p/", "", "p/p/", ""},
		{"p/", "p/", "\x00", "p/p/", "p0"},
		// Empty keys stay empty so that etcd rejects them itself.
		{"p/", "", "", "", ""},
		{"p/", "", "\x00", "", "p0"},
		{"p/", "", "b", "", "p/b"},
		// Empty prefix: untouched.
		{"", "a", "", "a", ""},
		{"", "a", "\x00", "a", "\x00"},
		{"", "a", "b", "a", "b"},
		{"", "", "", "", ""},
	} {
		t.Run(fmt.Sprintf("%q/%q-%q", tc.prefix, tc.key, tc.end), func(t *testing.T) {
			x := New(tc.prefix)
			key, end := b(tc.key), b(tc.end)
			k, e := x.Range(key, end)
			if !bytes.Equal(k, b(tc.wantKey)) || !bytes.Equal(e, b(tc.wantEnd)) {
				t.Errorf("Range(%q, %q) = [%s, %s), want [%q, %q)", tc.key, tc.end, q(k), q(e), tc.wantKey, tc.wantEnd)
			}
			if !bytes.Equal(key, b(tc.key)) || !bytes.Equal(end, b(tc.end)) {
				t.Errorf("Range modified its arguments: [%q, %q)", key, end)
			}
		})
	}
}

// TestRangeKeyEqualToPrefixUnreachable checks that etcd's key equal to the
// prefix itself can be neither addressed nor ranged over by a client: every
// non-empty client key maps strictly above it.
func TestRangeKeyEqualToPrefixUnreachable(t *testing.T) {
	x := New("p/")
	k, e := x.Range(b("\x00"), b("\x00")) // the widest range a client can ask for
	if !bytes.Equal(k, b("p/\x00")) || !bytes.Equal(e, b("p0")) {
		t.Fatalf("widest range = [%s, %s), want [\"p/\\x00\", \"p0\")", q(k), q(e))
	}
	if inBounds(b("p/"), k, e) {
		t.Errorf("widest client range [%q, %q) includes the prefix key itself", k, e)
	}
	if got := x.Strip(b("p/")); len(got) != 0 {
		t.Errorf("Strip(prefix) = %s, want empty", q(got))
	}
}

// TestRangeEndIsFresh checks that the "\x00" translation hands out a copy of
// the prefix end: a caller writing into one result must not corrupt the
// Prefix for later requests.
func TestRangeEndIsFresh(t *testing.T) {
	x := New("p/")
	_, e1 := x.Range(b("a"), b("\x00"))
	e1[0] = 'Z'
	_, e2 := x.Range(b("a"), b("\x00"))
	if !bytes.Equal(e2, b("p0")) {
		t.Errorf("after writing into an earlier result, Range end = %s, want \"p0\"", q(e2))
	}
	if _, be := x.Bounds(); !bytes.Equal(be, b("p0")) {
		t.Errorf("after writing into an earlier result, Bounds end = %s, want \"p0\"", q(be))
	}
}

func TestWatchRange(t *testing.T) {
	for _, tc := range []rangeCase{
		// etcd reads an empty watch key as "\x00"; under a prefix that is p+"\x00".
		{"p/", "", "", "p/\x00", ""},
		{"p/", "", "\x00", "p/\x00", "p0"},
		{"p/", "", "b", "p/\x00", "p/b"},
		// Non-empty keys behave as in Range.
		{"p/", "a", "", "p/a", ""},
		{"p/", "a", "\x00", "p/a", "p0"},
		{"p/", "a", "b", "p/a", "p/b"},
		{"a\xff", "", "\x00", "a\xff\x00", "b"},
		{"\xff", "", "\x00", "\xff\x00", "\x00"},
		// Empty prefix: untouched, including the empty key.
		{"", "", "", "", ""},
		{"", "", "\x00", "", "\x00"},
		{"", "a", "\x00", "a", "\x00"},
	} {
		x := New(tc.prefix)
		k, e := x.WatchRange(b(tc.key), b(tc.end))
		if !bytes.Equal(k, b(tc.wantKey)) || !bytes.Equal(e, b(tc.wantEnd)) {
			t.Errorf("prefix %q: WatchRange(%q, %q) = [%s, %s), want [%q, %q)",
				tc.prefix, tc.key, tc.end, q(k), q(e), tc.wantKey, tc.wantEnd)
		}
	}
}

func TestStripContains(t *testing.T) {
	for _, tc := range []struct {
		prefix, key string
		contains    bool
		strip       string
	}{
		{"p/", "p/a", true, "a"},
		{"p/", "p/a/b", true, "a/b"},
		{"p/", "p/p/x", true, "p/x"}, // only one prefix is stripped
		{"p/", "p/", true, ""},
		{"p/", "p", false, "p"},
		{"p/", "p0", false, "p0"},
		{"p/", "q/a", false, "q/a"},
		{"p/", "a", false, "a"},
		{"p/", "", false, ""},
		{"a\xff", "a\xff\x00", true, "\x00"},
		{"a\xff", "b", false, "b"},
		{"", "anything", true, "anything"},
		{"", "", true, ""},
	} {
		x := New(tc.prefix)
		if got := x.Contains(b(tc.key)); got != tc.contains {
			t.Errorf("prefix %q: Contains(%q) = %v, want %v", tc.prefix, tc.key, got, tc.contains)
		}
		if got := x.Strip(b(tc.key)); !bytes.Equal(got, b(tc.strip)) {
			t.Errorf("prefix %q: Strip(%q) = %s, want %q", tc.prefix, tc.key, q(got), tc.strip)
		}
	}

	// Strip undoes Key and Join.
	x := New("p/")
	for _, k := range []string{"a", "\x00", "\xff", "p/"} {
		if got := x.Strip(x.Key(b(k))); !bytes.Equal(got, b(k)) {
			t.Errorf("Strip(Key(%q)) = %s", k, q(got))
		}
		if !x.Contains(x.Key(b(k))) {
			t.Errorf("Contains(Key(%q)) = false", k)
		}
	}
	if got := x.Strip(x.Join(nil)); len(got) != 0 {
		t.Errorf("Strip(Join(\"\")) = %s, want empty", q(got))
	}
}

func kv(key, val string) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: b(key), Value: b(val), ModRevision: 7, Version: 1}
}

func TestSimpleRequests(t *testing.T) {
	x := New("p/")

	rr := &pb.RangeRequest{Key: b("a"), RangeEnd: b("\x00"), Limit: 10, Serializable: true}
	x.RangeRequest(rr)
	assertProto(t, "RangeRequest", rr, &pb.RangeRequest{Key: b("p/a"), RangeEnd: b("p0"), Limit: 10, Serializable: true})

	pr := &pb.PutRequest{Key: b("a"), Value: b("v"), Lease: 5, PrevKv: true}
	x.PutRequest(pr)
	assertProto(t, "PutRequest", pr, &pb.PutRequest{Key: b("p/a"), Value: b("v"), Lease: 5, PrevKv: true})

	pe := &pb.PutRequest{Value: b("v")}
	x.PutRequest(pe)
	assertProto(t, "PutRequest with empty key", pe, &pb.PutRequest{Value: b("v")})

	dr := &pb.DeleteRangeRequest{Key: b("a"), RangeEnd: b("c"), PrevKv: true}
	x.DeleteRangeRequest(dr)
	assertProto(t, "DeleteRangeRequest", dr, &pb.DeleteRangeRequest{Key: b("p/a"), RangeEnd: b("p/c"), PrevKv: true})

	wc := &pb.WatchCreateRequest{RangeEnd: b("\x00"), StartRevision: 3, PrevKv: true}
	x.WatchCreateRequest(wc)
	assertProto(t, "WatchCreateRequest with empty key", wc,
		&pb.WatchCreateRequest{Key: b("p/\x00"), RangeEnd: b("p0"), StartRevision: 3, PrevKv: true})

	// nil messages are ignored.
	x.RangeRequest(nil)
	x.PutRequest(nil)
	x.DeleteRangeRequest(nil)
	x.TxnRequest(nil)
	x.WatchCreateRequest(nil)
	x.RangeResponse(nil)
	x.RangeStreamResponse(nil)
	x.PutResponse(nil)
	x.DeleteRangeResponse(nil)
	x.TxnResponse(nil)
	x.WatchResponse(nil)
	x.KeyValue(nil)
}

func TestSimpleResponses(t *testing.T) {
	x := New("p/")

	rr := &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("p/a", "1"), kv("p/b", "2")}, Count: 2, More: true}
	x.RangeResponse(rr)
	assertProto(t, "RangeResponse", rr, &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("a", "1"), kv("b", "2")}, Count: 2, More: true})

	rs := &pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("p/x", "1")}}}
	x.RangeStreamResponse(rs)
	assertProto(t, "RangeStreamResponse", rs, &pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("x", "1")}}})
	x.RangeStreamResponse(&pb.RangeStreamResponse{}) // no inner response: no panic

	pr := &pb.PutResponse{PrevKv: kv("p/a", "old")}
	x.PutResponse(pr)
	assertProto(t, "PutResponse", pr, &pb.PutResponse{PrevKv: kv("a", "old")})
	x.PutResponse(&pb.PutResponse{}) // no prev_kv: no panic

	dr := &pb.DeleteRangeResponse{Deleted: 2, PrevKvs: []*mvccpb.KeyValue{kv("p/a", "1"), kv("p/b", "2")}}
	x.DeleteRangeResponse(dr)
	assertProto(t, "DeleteRangeResponse", dr, &pb.DeleteRangeResponse{Deleted: 2, PrevKvs: []*mvccpb.KeyValue{kv("a", "1"), kv("b", "2")}})
}

func cmpVersion(key, end string, v int64) *pb.Compare {
	return &pb.Compare{
		Result:      pb.Compare_EQUAL,
		Target:      pb.Compare_VERSION,
		Key:         b(key),
		RangeEnd:    b(end),
		TargetUnion: &pb.Compare_Version{Version: v},
	}
}

func opRange(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: b(key), RangeEnd: b(end)}}}
}

func opPut(key, val string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: b(key), Value: b(val)}}}
}

func opDelete(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: b(key), RangeEnd: b(end)}}}
}

func opTxn(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func TestTxnRequest(t *testing.T) {
	x := New("p/")
	req := &pb.TxnRequest{
		Compare: []*pb.Compare{
			cmpVersion("a", "", 1),
			cmpVersion("a", "\x00", 2),
			cmpVersion("a", "c", 3),
			cmpVersion("", "", 4), // stays empty: etcd rejects it
			nil,
		},
		Success: []*pb.RequestOp{
			opRange("r", "\x00"),
			opPut("k", "v"),
			opDelete("d", "e"),
			opTxn(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpVersion("n", "\x00", 5)},
				Success: []*pb.RequestOp{
					opPut("n", "1"),
					opTxn(&pb.TxnRequest{
						Compare: []*pb.Compare{cmpVersion("deep", "deeq", 6)},
						Failure: []*pb.RequestOp{opDelete("deep", "")},
					}),
				},
				Failure: []*pb.RequestOp{opRange("n", "")},
			}),
			{}, // no request at all
			nil,
		},
		Failure: []*pb.RequestOp{
			opPut("f", "x"),
			opRange("", "\x00"),
		},
	}
	want := &pb.TxnRequest{
		Compare: []*pb.Compare{
			cmpVersion("p/a", "", 1),
			cmpVersion("p/a", "p0", 2),
			cmpVersion("p/a", "p/c", 3),
			cmpVersion("", "", 4),
			nil,
		},
		Success: []*pb.RequestOp{
			opRange("p/r", "p0"),
			opPut("p/k", "v"),
			opDelete("p/d", "p/e"),
			opTxn(&pb.TxnRequest{
				Compare: []*pb.Compare{cmpVersion("p/n", "p0", 5)},
				Success: []*pb.RequestOp{
					opPut("p/n", "1"),
					opTxn(&pb.TxnRequest{
						Compare: []*pb.Compare{cmpVersion("p/deep", "p/deeq", 6)},
						Failure: []*pb.RequestOp{opDelete("p/deep", "")},
					}),
				},
				Failure: []*pb.RequestOp{opRange("p/n", "")},
			}),
			{},
			nil,
		},
		Failure: []*pb.RequestOp{
			opPut("p/f", "x"),
			opRange("", "p0"),
		},
	}
	x.TxnRequest(req)
	assertProto(t, "TxnRequest", req, want)
	// proto.Equal does not look at the nil compare specially; check it kept its place.
	if req.Compare[4] != nil || req.Success[5] != nil {
		t.Error("nil compare/op replaced")
	}
}

func TestTxnResponse(t *testing.T) {
	x := New("p/")
	resp := &pb.TxnResponse{
		Succeeded: true,
		Responses: []*pb.ResponseOp{
			{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("p/a", "1")}, Count: 1}}},
			{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{PrevKv: kv("p/b", "2")}}},
			{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{Deleted: 1, PrevKvs: []*mvccpb.KeyValue{kv("p/c", "3")}}}},
			{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: &pb.TxnResponse{
				Responses: []*pb.ResponseOp{
					{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("p/n1", "4"), kv("p/n2", "5")}}}},
					{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: &pb.TxnResponse{
						Responses: []*pb.ResponseOp{
							{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{PrevKv: kv("p/deep", "6")}}},
						},
					}}},
				},
			}}},
			{},
			nil,
		},
	}
	want := &pb.TxnResponse{
		Succeeded: true,
		Responses: []*pb.ResponseOp{
			{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("a", "1")}, Count: 1}}},
			{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{PrevKv: kv("b", "2")}}},
			{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: &pb.DeleteRangeResponse{Deleted: 1, PrevKvs: []*mvccpb.KeyValue{kv("c", "3")}}}},
			{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: &pb.TxnResponse{
				Responses: []*pb.ResponseOp{
					{Response: &pb.ResponseOp_ResponseRange{ResponseRange: &pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("n1", "4"), kv("n2", "5")}}}},
					{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: &pb.TxnResponse{
						Responses: []*pb.ResponseOp{
							{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{PrevKv: kv("deep", "6")}}},
						},
					}}},
				},
			}}},
			{},
			nil,
		},
	}
	x.TxnResponse(resp)
	assertProto(t, "TxnResponse", resp, want)
}

func event(typ mvccpb.Event_EventType, cur, prev *mvccpb.KeyValue) *mvccpb.Event {
	return &mvccpb.Event{Type: typ, Kv: cur, PrevKv: prev}
}

func TestWatchResponse(t *testing.T) {
	x := New("p/")
	resp := &pb.WatchResponse{
		Header:  &pb.ResponseHeader{Revision: 9},
		WatchId: 3,
		Events: []*mvccpb.Event{
			event(mvccpb.PUT, kv("p/a", "new"), kv("p/a", "old")),
			event(mvccpb.PUT, kv("q/a", "x"), nil), // another namespace
			event(mvccpb.DELETE, kv("p/b", ""), kv("p/b", "gone")),
			event(mvccpb.PUT, kv("p", "x"), nil),   // shorter than the prefix
			event(mvccpb.PUT, kv("p0", "x"), nil),  // the prefix end itself
			event(mvccpb.PUT, kv("p/c", "c"), nil), // no prev_kv
			nil,
			event(mvccpb.PUT, nil, kv("p/z", "z")), // no kv
			event(mvccpb.PUT, kv("p/", "root"), nil),
		},
	}
	x.WatchResponse(resp)
	want := &pb.WatchResponse{
		Header:  &pb.ResponseHeader{Revision: 9},
		WatchId: 3,
		Events: []*mvccpb.Event{
			event(mvccpb.PUT, kv("a", "new"), kv("a", "old")),
			event(mvccpb.DELETE, kv("b", ""), kv("b", "gone")),
			event(mvccpb.PUT, kv("c", "c"), nil),
			event(mvccpb.PUT, kv("", "root"), nil),
		},
	}
	assertProto(t, "WatchResponse", resp, want)

	// All events outside: the response is kept with no events (progress
	// and header information still reach the client).
	allOut := &pb.WatchResponse{WatchId: 1, Events: []*mvccpb.Event{event(mvccpb.PUT, kv("q/1", "x"), nil)}}
	x.WatchResponse(allOut)
	if len(allOut.Events) != 0 || allOut.WatchId != 1 {
		t.Errorf("all-outside WatchResponse = %s", prototext.Format(allOut))
	}

	// Control responses without events are left alone.
	ctl := &pb.WatchResponse{WatchId: 4, Created: true, CompactRevision: 2}
	x.WatchResponse(ctl)
	assertProto(t, "control WatchResponse", ctl, &pb.WatchResponse{WatchId: 4, Created: true, CompactRevision: 2})
}

func TestLeaseKeys(t *testing.T) {
	x := New("p/")

	in, all := x.LeaseKeys([][]byte{b("p/a"), b("q/b"), b("p/c"), b("p"), b("p/")})
	wantIn := [][]byte{b("a"), b("c"), b("")}
	if all {
		t.Error("LeaseKeys with foreign keys: all = true, want false")
	}
	if !equalKeys(in, wantIn) {
		t.Errorf("LeaseKeys inside = %q, want %q", in, wantIn)
	}

	in, all = x.LeaseKeys([][]byte{b("p/a"), b("p/b")})
	if !all || !equalKeys(in, [][]byte{b("a"), b("b")}) {
		t.Errorf("LeaseKeys all inside = %q, %v; want [a b], true", in, all)
	}

	in, all = x.LeaseKeys([][]byte{b("q/a")})
	if all || len(in) != 0 {
		t.Errorf("LeaseKeys all outside = %q, %v; want [], false", in, all)
	}

	in, all = x.LeaseKeys(nil)
	if !all || len(in) != 0 {
		t.Errorf("LeaseKeys(nil) = %q, %v; want [], true", in, all)
	}

	var z Prefix
	keys := [][]byte{b("p/a"), b("q/b")}
	in, all = z.LeaseKeys(keys)
	if !all || !equalKeys(in, [][]byte{b("p/a"), b("q/b")}) {
		t.Errorf("empty prefix: LeaseKeys = %q, %v; want unchanged, true", in, all)
	}
}

func equalKeys(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestEmptyPrefixNoOp checks that the empty prefix translates nothing, not
// even the special "\x00" end or an empty watch key.
func TestEmptyPrefixNoOp(t *testing.T) {
	for _, x := range []Prefix{New(""), {}} {
		for _, tc := range [][2]string{{"a", ""}, {"a", "\x00"}, {"a", "b"}, {"", ""}, {"", "\x00"}, {"\xff", "\xff\xff"}} {
			k, e := x.Range(b(tc[0]), b(tc[1]))
			if !bytes.Equal(k, b(tc[0])) || !bytes.Equal(e, b(tc[1])) {
				t.Errorf("empty prefix: Range(%q, %q) = [%s, %s)", tc[0], tc[1], q(k), q(e))
			}
			k, e = x.WatchRange(b(tc[0]), b(tc[1]))
			if !bytes.Equal(k, b(tc[0])) || !bytes.Equal(e, b(tc[1])) {
				t.Errorf("empty prefix: WatchRange(%q, %q) = [%s, %s)", tc[0], tc[1], q(k), q(e))
			}
		}

		msgs := []struct {
			m     proto.Message
			apply func(proto.Message)
		}{
			{&pb.RangeRequest{Key: b("a"), RangeEnd: b("\x00")}, func(m proto.Message) { x.RangeRequest(m.(*pb.RangeRequest)) }},
			{&pb.PutRequest{Key: b("a"), Value: b("v")}, func(m proto.Message) { x.PutRequest(m.(*pb.PutRequest)) }},
			{&pb.DeleteRangeRequest{Key: b("a"), RangeEnd: b("b")}, func(m proto.Message) { x.DeleteRangeRequest(m.(*pb.DeleteRangeRequest)) }},
			{&pb.TxnRequest{
				Compare: []*pb.Compare{cmpVersion("a", "\x00", 1)},
				Success: []*pb.RequestOp{opPut("a", "v"), opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opRange("x", "\x00")}})},
			}, func(m proto.Message) { x.TxnRequest(m.(*pb.TxnRequest)) }},
			{&pb.WatchCreateRequest{RangeEnd: b("\x00")}, func(m proto.Message) { x.WatchCreateRequest(m.(*pb.WatchCreateRequest)) }},
			{&pb.RangeResponse{Kvs: []*mvccpb.KeyValue{kv("p/a", "1")}}, func(m proto.Message) { x.RangeResponse(m.(*pb.RangeResponse)) }},
			{&pb.PutResponse{PrevKv: kv("p/a", "1")}, func(m proto.Message) { x.PutResponse(m.(*pb.PutResponse)) }},
			{&pb.DeleteRangeResponse{PrevKvs: []*mvccpb.KeyValue{kv("p/a", "1")}}, func(m proto.Message) { x.DeleteRangeResponse(m.(*pb.DeleteRangeResponse)) }},
			{&pb.TxnResponse{Responses: []*pb.ResponseOp{{Response: &pb.ResponseOp_ResponsePut{ResponsePut: &pb.PutResponse{PrevKv: kv("p/a", "1")}}}}},
				func(m proto.Message) { x.TxnResponse(m.(*pb.TxnResponse)) }},
			{&pb.WatchResponse{Events: []*mvccpb.Event{event(mvccpb.PUT, kv("p/a", "1"), kv("p/a", "0")), event(mvccpb.PUT, kv("q", "1"), nil)}},
				func(m proto.Message) { x.WatchResponse(m.(*pb.WatchResponse)) }},
		}
		for _, tc := range msgs {
			want := proto.Clone(tc.m)
			tc.apply(tc.m)
			assertProto(t, fmt.Sprintf("empty prefix %T", tc.m), tc.m, want)
		}
	}
}

// genKey draws keys that favour the bytes where off-by-one mistakes live.
func genKey(minLen, maxLen int) *rapid.Generator[[]byte] {
	edge := rapid.SampledFrom([]byte{0x00, 0x01, 'a', 'b', 0xfe, 0xff})
	return rapid.SliceOfN(rapid.OneOf(edge, rapid.Byte()), minLen, maxLen)
}

// checkTranslated checks that the etcd range [k, e), translated from the
// client range [key, end) under prefix p, stays inside [p, PrefixEnd(p)),
// keeps etcd's range conventions and keeps the order of key and end.
func checkTranslated(t interface {
	Helper()
	Fatalf(string, ...any)
}, p, key, end, k, e []byte) {
	t.Helper()
	pend := PrefixEnd(p)

	if len(key) == 0 {
		if len(k) != 0 {
			t.Fatalf("empty key translated to %q", k)
		}
	} else {
		if !inBounds(k, p, pend) {
			t.Fatalf("key %q -> %q outside [%q, %q)", key, k, p, pend)
		}
		if !bytes.HasPrefix(k, p) || !bytes.Equal(k[len(p):], key) {
			t.Fatalf("key %q -> %q is not p+key", key, k)
		}
	}

	switch {
	case len(end) == 0:
		if len(e) != 0 {
			t.Fatalf("single-key request %q got end %q", key, e)
		}
	case isEnd(end):
		if !bytes.Equal(e, pend) {
			t.Fatalf("end \\x00 -> %q, want prefix end %q", e, pend)
		}
	default:
		if isEnd(e) {
			t.Fatalf("ordinary end %q became \\x00", end)
		}
		if !bytes.HasPrefix(e, p) || !bytes.Equal(e[len(p):], end) {
			t.Fatalf("end %q -> %q is not p+end", end, e)
		}
		// Order is preserved.
		if c1, c2 := bytes.Compare(key, end), bytes.Compare(k, e); c1 != c2 {
			t.Fatalf("order changed: cmp(%q, %q)=%d but cmp(%q, %q)=%d", key, end, c1, k, e, c2)
		}
	}

	// Subset: an etcd range end, if any, may not go past the prefix end.
	if len(e) > 0 {
		if isEnd(e) && !isEnd(pend) {
			t.Fatalf("[%q, \\x00) runs past prefix end %q", k, pend)
		}
		if !isEnd(e) && !isEnd(pend) && bytes.Compare(e, pend) > 0 {
			t.Fatalf("end %q is past prefix end %q", e, pend)
		}
	}
}

// rangeHas reports whether etcd key z is selected by etcd range [k, e).
func rangeHas(k, e, z []byte) bool {
	switch {
	case len(k) == 0:
		return false // etcd rejects the request
	case len(e) == 0:
		return bytes.Equal(z, k)
	default:
		return inBounds(z, k, e)
	}
}

func TestRangeProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := genKey(1, 6).Draw(t, "prefix")
		key := genKey(0, 6).Draw(t, "key")
		end := rapid.OneOf(rapid.Just([]byte{}), rapid.Just([]byte{0}), genKey(1, 6)).Draw(t, "end")
		x := New(string(p))
		if got, want := PrefixEnd(p), refPrefixEnd(p); !bytes.Equal(got, want) {
			t.Fatalf("PrefixEnd(%q) = %q, want %q", p, got, want)
		}

		k, e := x.Range(bytes.Clone(key), bytes.Clone(end))
		checkTranslated(t, p, key, end, k, e)

		wk, we := x.WatchRange(bytes.Clone(key), bytes.Clone(end))
		wkey := key
		if len(wkey) == 0 {
			wkey = []byte{0}
		}
		checkTranslated(t, p, wkey, end, wk, we)

		if len(key) > 0 {
			if got := x.Strip(k); !bytes.Equal(got, key) {
				t.Fatalf("Strip(%q) = %q, want %q", k, got, key)
			}
		}

		// Probe with concrete etcd keys: any key the translated range selects
		// lies under the prefix.
		for i, z := range [][]byte{
			genKey(0, 8).Draw(t, "probe"),
			append(bytes.Clone(p), genKey(0, 3).Draw(t, "probe suffix")...),
			PrefixEnd(p),
			refPrefixEnd(p), // the first key above the prefix
			naivePrefixEnd(p),
			p[:len(p)-1],
			append(bytes.Clone(PrefixEnd(p)), 0),
		} {
			for _, r := range [][2][]byte{{k, e}, {wk, we}} {
				if rangeHas(r[0], r[1], z) && !bytes.HasPrefix(z, p) {
					t.Fatalf("probe %d: range [%q, %q) selects %q outside prefix %q", i, r[0], r[1], z, p)
				}
			}
		}
	})
}
