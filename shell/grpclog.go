package shell

import (
	"context"
	"fmt"
	"path"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"go.uber.org/zap"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/protoadapt"
)

// --experimental-enable-grpc-logging logs every request a client sends and
// every response it is sent, as etcd's grpc-proxy does: one info line per
// message, with the same messages and field names (grpc.service,
// grpc.method, peer.address, and the payload as JSON in
// grpc.request.content or grpc.response.content), so that what operators
// grep for in etcd's proxy logs is found here too. It costs a JSON encoding
// per message: a debugging aid, not for production load.

// grpcLogReporter reports one call's messages to lg.
type grpcLogReporter struct {
	lg     *zap.Logger
	fields []zap.Field
}

func (r *grpcLogReporter) PostCall(error, time.Duration) {}

func (r *grpcLogReporter) PostMsgReceive(payload any, err error, _ time.Duration) {
	r.lg.Info("received payload logged as grpc.request.content field", append(payloadFields(payload, err, "request"), r.fields...)...)
}

func (r *grpcLogReporter) PostMsgSend(payload any, err error, _ time.Duration) {
	r.lg.Info("returned response payload logged as grpc.response.content field", append(payloadFields(payload, err, "response"), r.fields...)...)
}

// payloadFields describes one message (and its error) as log fields.
func payloadFields(payload any, err error, kind string) []zap.Field {
	var fs []zap.Field
	if err != nil {
		fs = append(fs, zap.NamedError("grpc."+kind+".error", err))
	}
	if m, ok := payload.(*outMsg); ok {
		// A watch or keep-alive response, maybe sharing its events'
		// encoding with other watchers: logged as the message it is.
		payload = m.response()
		if m.lease != nil {
			payload = m.lease
		}
	}
	content := ""
	switch m := payload.(type) {
	case protoadapt.MessageV2:
		b, jerr := protojson.Marshal(m)
		if jerr != nil {
			fs = append(fs, zap.NamedError("msg.proto.error", fmt.Errorf("error when converting payload to logging json: %w", jerr)))
		}
		content = string(b)
	case protoadapt.MessageV1:
		b, jerr := protojson.Marshal(protoadapt.MessageV2Of(m))
		if jerr != nil {
			fs = append(fs, zap.NamedError("msg.proto.error", fmt.Errorf("error when converting payload to logging json: %w", jerr)))
		}
		content = string(b)
	default:
		fs = append(fs, zap.NamedError("msg.type.error", fmt.Errorf("payload %T is not a protobuf message", payload)))
	}
	return append(fs, zap.String("grpc."+kind+".content", content))
}

// grpcLogReportable makes a reporter per call, naming its service, method
// and peer.
func grpcLogReportable(lg *zap.Logger) interceptors.CommonReportableFunc {
	return func(ctx context.Context, c interceptors.CallMeta) (interceptors.Reporter, context.Context) {
		fs := []zap.Field{
			zap.String("grpc.service", path.Dir(c.FullMethod())[1:]),
			zap.String("grpc.method", path.Base(c.FullMethod())),
		}
		if p, ok := peer.FromContext(ctx); ok {
			fs = append(fs, zap.String("peer.address", p.Addr.String()))
		}
		return &grpcLogReporter{lg: lg, fields: fs}, ctx
	}
}
