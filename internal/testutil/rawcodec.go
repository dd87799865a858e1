package testutil

import "google.golang.org/grpc/encoding"

// RawCodec sends and receives a call's bytes as they are, undecoded: with
// grpc.ForceCodec(RawCodec{}) a test sends malformed protobuf, or any
// request bytes a fuzzer made, and gets the answer's bytes back. The
// message arguments are *[]byte.
type RawCodec struct{}

func (RawCodec) Marshal(v any) ([]byte, error)   { return *(v.(*[]byte)), nil }
func (RawCodec) Unmarshal(b []byte, v any) error { *(v.(*[]byte)) = b; return nil }
func (RawCodec) Name() string                    { return "raw-bytes" }

var _ encoding.Codec = RawCodec{}
