package cache

import "bytes"

// rangeIndex finds the entries whose range holds a key: single-key entries
// by key, the others by a scan (few ranges are hot).
type rangeIndex struct {
	single map[string]map[*entry]struct{}
	spans  map[*entry]struct{}
}

func (x *rangeIndex) add(e *entry) {
	if len(e.end) == 0 {
		if x.single == nil {
			x.single = map[string]map[*entry]struct{}{}
		}
		s := x.single[string(e.start)]
		if s == nil {
			s = map[*entry]struct{}{}
			x.single[string(e.start)] = s
		}
		s[e] = struct{}{}
		return
	}
	if x.spans == nil {
		x.spans = map[*entry]struct{}{}
	}
	x.spans[e] = struct{}{}
}

func (x *rangeIndex) remove(e *entry) {
	if len(e.end) == 0 {
		if s := x.single[string(e.start)]; s != nil {
			delete(s, e)
			if len(s) == 0 {
				delete(x.single, string(e.start))
			}
		}
		return
	}
	delete(x.spans, e)
}

// touching returns the entries whose range holds key.
func (x *rangeIndex) touching(key []byte) []*entry {
	var out []*entry
	for e := range x.single[string(key)] {
		out = append(out, e)
	}
	for e := range x.spans {
		if holds(e.start, e.end, key) {
			out = append(out, e)
		}
	}
	return out
}

// holds reports whether etcd's range [start, end) holds key: end empty is
// the single key start; end "\x00" is every key from start on; start
// "\x00" with end "\x00" is every key.
func holds(start, end, key []byte) bool {
	if len(end) == 0 {
		return bytes.Equal(start, key)
	}
	if bytes.Compare(key, start) < 0 {
		return false
	}
	if len(end) == 1 && end[0] == 0 {
		return true
	}
	return bytes.Compare(key, end) < 0
}
