package keyspace

import "bytes"

// Prefix translates between a client's keyspace and etcd's keyspace under a
// namespace prefix. The zero value is the empty prefix, which translates
// nothing.
type Prefix struct {
	p []byte
	// end is the exclusive upper bound of all keys starting with p; it is
	// []byte{0} ("to the end of the keyspace") when p consists only of 0xff.
	end []byte
}

// New returns the translation for prefix p.
func New(p string) Prefix {
	if p == "" {
		return Prefix{}
	}
	b := []byte(p)
	return Prefix{p: b, end: PrefixEnd(b)}
}

// PrefixEnd returns the smallest key greater than every key that starts
// with p, or "\x00" (etcd's "to the end of the keyspace") if there is none
// because p is all 0xff bytes. Unlike a plain increment of the last byte, a
// trailing 0xff is dropped before incrementing, so that the result never
// admits a key outside p (for p = "a\xff" the end is "b", not "b\x00").
func PrefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// Empty reports whether the prefix is empty, so that nothing is translated.
func (x Prefix) Empty() bool { return len(x.p) == 0 }

// String returns the prefix itself.
func (x Prefix) String() string { return string(x.p) }

// Key returns etcd's key for a client key. An empty key stays empty, so that
// etcd answers it with its own "key is not provided" error.
func (x Prefix) Key(k []byte) []byte {
	if len(k) == 0 {
		return k
	}
	return x.Join(k)
}

// Range returns etcd's [key, end) for a client's [key, end), with etcd's
// conventions: an empty end selects the single key, and an end of "\x00"
// selects every key from key on, which under a prefix means every key from
// key up to the end of the prefix.
func (x Prefix) Range(key, end []byte) ([]byte, []byte) {
	if len(x.p) == 0 {
		return key, end
	}
	k := x.Key(key)
	switch {
	case len(end) == 0:
		return k, end
	case len(end) == 1 && end[0] == 0:
		return k, bytes.Clone(x.end)
	default:
		return k, x.Key(end)
	}
}

// WatchRange is Range for a watch request: etcd treats an empty watch key as
// "\x00", the smallest key, so the same is done before prefixing; otherwise
// an empty key would stay outside the prefix.
func (x Prefix) WatchRange(key, end []byte) ([]byte, []byte) {
	if len(x.p) != 0 && len(key) == 0 {
		key = []byte{0}
	}
	return x.Range(key, end)
}

// Contains reports whether etcd key k lies inside the prefix, so that a
// client of this namespace may see it.
func (x Prefix) Contains(k []byte) bool {
	return bytes.HasPrefix(k, x.p)
}

// Strip returns the client's key for etcd key k. Keys outside the prefix are
// returned unchanged; callers filter them with Contains first where such keys
// can occur.
func (x Prefix) Strip(k []byte) []byte {
	if len(x.p) == 0 || !bytes.HasPrefix(k, x.p) {
		return k
	}
	return k[len(x.p):]
}

// Bounds returns [p, end(p)): the interval of etcd's keyspace the prefix
// owns. end is "\x00" when the prefix runs to the end of the keyspace.
func (x Prefix) Bounds() (start, end []byte) { return x.p, x.end }

// Join returns p+name for names that etcd uses as key prefixes (election
// and lock names). Unlike Key, an empty name is prefixed too: etcd accepts
// it, and left alone it would name a prefix outside the namespace.
func (x Prefix) Join(name []byte) []byte {
	if len(x.p) == 0 {
		return name
	}
	out := make([]byte, len(x.p)+len(name))
	copy(out[copy(out, x.p):], name)
	return out
}
