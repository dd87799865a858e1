package shell

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// clientConnState is what the proxy keeps per client connection: the
// connection's floor (floor.go), its open streams (limits.go) and the
// proxy's upstream (for outgoing). Every call on the connection finds it
// in its peer (connOf).
//
// It travels as the connection's credentials.AuthInfo, set once when gRPC
// accepts the connection (connTagger.ServerHandshake). A gRPC stats
// handler's TagConn could carry it too, but any stats handler makes gRPC
// copy every call's incoming metadata (a map per call, 8% of the proxy's
// CPU under hot cached reads); the peer is in every call's context anyway.
type clientConnState struct {
	credentials.CommonAuthInfo
	floor   *floor
	streams connStreams
	up      *upstream
}

// AuthType names the proxy's connection tag; TLS, when the proxy serves
// it, is terminated by the listener before gRPC sees the connection.
func (*clientConnState) AuthType() string { return "etcdproxy" }

// connTagger is the gRPC server's transport credentials: it performs no
// handshake (the listener has already done TLS, if any) and tags each
// connection with a fresh clientConnState.
type connTagger struct {
	// shared, if set, is the one floor of every connection
	// (--experimental-serializable-ordering).
	shared *floor
	up     *upstream
	// level is the security the listener gives the connection.
	level credentials.SecurityLevel
}

func (t connTagger) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	f := t.shared
	if f == nil {
		f = &floor{}
	}
	return c, &clientConnState{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: t.level}, floor: f, up: t.up}, nil
}

// ClientHandshake refuses: the proxy dials etcd with clientv3's own
// credentials, never with these.
func (connTagger) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("etcdproxy: connection tags are for the proxy's server side only")
}

func (connTagger) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "etcdproxy"}
}

func (t connTagger) Clone() credentials.TransportCredentials { return t }

func (connTagger) OverrideServerName(string) error { return nil }

// connOf returns the state of the client connection a call came on (nil
// outside a server call).
func connOf(ctx context.Context) *clientConnState {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	c, _ := p.AuthInfo.(*clientConnState)
	return c
}
