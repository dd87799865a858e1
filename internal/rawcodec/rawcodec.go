// Package rawcodec is a gRPC codec that sends and receives a call's bytes
// as they are, undecoded: with grpc.ForceCodec(rawcodec.Codec{}) a test or a
// benchmark sends malformed protobuf, or any request bytes a fuzzer made,
// and gets the answer's bytes back. The message arguments are *[]byte.
package rawcodec

import "google.golang.org/grpc/encoding"

// Codec passes bytes through.
type Codec struct{}

func (Codec) Marshal(v any) ([]byte, error)   { return *(v.(*[]byte)), nil }
func (Codec) Unmarshal(b []byte, v any) error { *(v.(*[]byte)) = b; return nil }
func (Codec) Name() string                    { return "raw-bytes" }

var _ encoding.Codec = Codec{}
