package main

// Turning etcd auth on and off for the authenticated phases, and the tokens
// they use. Everything goes straight to the etcd member (--put-endpoint)
// through etcd's Auth gRPC API, except the reader's tokens: those are
// obtained with Authenticate through the target (--endpoints), as a client
// of the target would get them, so that a proxy sees the token issued and
// knows its user.
//
// Setting up is idempotent, because bench/watchfanout/run.sh runs the
// generator once per target against the same member: users are created if
// missing (a user that exists gets its password set), the reader's role is
// deleted and created again with READ on this run's key only, and role
// grants are granted again, which etcd accepts. If a
// run died with auth still on (SIGKILL, or past its hard deadline), the
// next run finds it on and turns it off first (ensureAuthOff), as root with
// the password below.

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	rootUser     = "root" // etcd requires this user, with the role root, to enable auth
	rootRole     = "root"
	rootPassword = "watchfanout-root"
	readUser     = "watchfanout-reader" // the watchers' user: may read --key, nothing else
	readPassword = "watchfanout-reader"
	readRole     = "watchfanout-read"

	authCallTimeout = 30 * time.Second // per Auth call (Authenticate costs a bcrypt and a raft round)
)

// authSetupTime bounds setting up, the tokens and tearing down, for the
// hard deadline.
func authSetupTime(o options) time.Duration {
	return time.Duration(12+o.conns) * authCallTimeout
}

// withToken returns ctx carrying the auth token tok, as clientv3 sends it;
// ctx itself if tok is empty.
func withToken(ctx context.Context, tok string) context.Context {
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, tok)
}

// isErr reports whether err is etcd's gRPC error want (compared by message,
// as clientv3 does).
func isErr(err, want error) bool {
	return err != nil && status.Convert(err).Message() == status.Convert(want).Message()
}

// etcdAuth is etcd with auth enabled by this run.
type etcdAuth struct {
	auth      pb.AuthClient
	rootToken string
}

// call runs one Auth call with its own deadline; the context carries tok.
func call[R any](tok string, f func(context.Context) (R, error)) (R, error) {
	ctx, cancel := context.WithTimeout(withToken(context.Background(), tok), authCallTimeout)
	defer cancel()
	return f(ctx)
}

// ensureAuthOff turns auth off if an earlier run of this tool left it on;
// if auth is on and root's password is not this tool's, it fails.
func ensureAuthOff(conn *grpc.ClientConn) error {
	a := &etcdAuth{auth: pb.NewAuthClient(conn)}
	st, err := call("", func(ctx context.Context) (*pb.AuthStatusResponse, error) {
		return a.auth.AuthStatus(ctx, &pb.AuthStatusRequest{})
	})
	if err != nil {
		return fmt.Errorf("auth status: %w", err)
	}
	if !st.Enabled {
		return nil
	}
	if a.rootToken, err = a.authenticate(rootUser, rootPassword); err != nil {
		return fmt.Errorf("auth is enabled on etcd, and not by this tool (authenticate %s: %w)", rootUser, err)
	}
	if err := a.disable(); err != nil {
		return fmt.Errorf("auth is enabled on etcd, left by an earlier run; disabling it: %w", err)
	}
	fmt.Fprintln(os.Stderr, "watchfanout: auth was enabled on etcd, left by an earlier run; disabled it")
	return nil
}

// enableAuth creates the root user (role root) and the reader (role
// readRole: READ on key only), enables auth, and authenticates as root.
// Auth must be off (ensureAuthOff).
func enableAuth(conn *grpc.ClientConn, key string) (*etcdAuth, error) {
	a := &etcdAuth{auth: pb.NewAuthClient(conn)}
	const tok = "" // auth is off during setup
	for _, u := range []struct{ name, password, role string }{{rootUser, rootPassword, rootRole}, {readUser, readPassword, readRole}} {
		_, err := call(tok, func(ctx context.Context) (*pb.AuthUserAddResponse, error) {
			return a.auth.UserAdd(ctx, &pb.AuthUserAddRequest{Name: u.name, Password: u.password})
		})
		if isErr(err, rpctypes.ErrGRPCUserAlreadyExist) {
			_, err = call(tok, func(ctx context.Context) (*pb.AuthUserChangePasswordResponse, error) {
				return a.auth.UserChangePassword(ctx, &pb.AuthUserChangePasswordRequest{Name: u.name, Password: u.password})
			})
		}
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", u.name, err)
		}
		if u.role != rootRole {
			_, err = call(tok, func(ctx context.Context) (*pb.AuthRoleDeleteResponse, error) {
				return a.auth.RoleDelete(ctx, &pb.AuthRoleDeleteRequest{Role: u.role})
			})
			if err != nil && !isErr(err, rpctypes.ErrGRPCRoleNotFound) {
				return nil, fmt.Errorf("role %s: delete the last run's: %w", u.role, err)
			}
			_, err = call(tok, func(ctx context.Context) (*pb.AuthRoleAddResponse, error) {
				return a.auth.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: u.role})
			})
			if err != nil {
				return nil, fmt.Errorf("role %s: %w", u.role, err)
			}
			_, err = call(tok, func(ctx context.Context) (*pb.AuthRoleGrantPermissionResponse, error) {
				return a.auth.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: u.role,
					Perm: &authpb.Permission{PermType: authpb.READ, Key: []byte(key)}})
			})
			if err != nil {
				return nil, fmt.Errorf("role %s: grant READ on %q: %w", u.role, key, err)
			}
		}
		_, err = call(tok, func(ctx context.Context) (*pb.AuthUserGrantRoleResponse, error) {
			return a.auth.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: u.name, Role: u.role})
		})
		if err != nil {
			return nil, fmt.Errorf("user %s: grant role %s: %w", u.name, u.role, err)
		}
	}
	if _, err := call(tok, func(ctx context.Context) (*pb.AuthEnableResponse, error) {
		return a.auth.AuthEnable(ctx, &pb.AuthEnableRequest{})
	}); err != nil {
		return nil, fmt.Errorf("auth enable: %w", err)
	}
	// Auth is on from here: the caller must call disable, even on error.
	var err error
	if a.rootToken, err = a.authenticate(rootUser, rootPassword); err != nil {
		return a, fmt.Errorf("authenticate %s: %w", rootUser, err)
	}
	return a, nil
}

// authenticate returns a new token for user.
func (a *etcdAuth) authenticate(user, password string) (string, error) {
	return authenticate(a.auth, user, password)
}

// authenticate returns a new token for user, from Authenticate on ac.
func authenticate(ac pb.AuthClient, user, password string) (string, error) {
	r, err := call("", func(ctx context.Context) (*pb.AuthenticateResponse, error) {
		return ac.Authenticate(ctx, &pb.AuthenticateRequest{Name: user, Password: password})
	})
	if err != nil {
		return "", err
	}
	return r.Token, nil
}

// readerTokens returns n distinct tokens of the reader, one Authenticate
// each, token i from Authenticate on acs[i mod len(acs)] (the target's
// endpoints, in the order openStreams spreads the connections over them).
func readerTokens(acs []pb.AuthClient, n int) ([]string, error) {
	toks := make([]string, n)
	for i := range toks {
		t, err := authenticate(acs[i%len(acs)], readUser, readPassword)
		if err != nil {
			return nil, fmt.Errorf("authenticate %s (%d of %d): %w", readUser, i+1, n, err)
		}
		toks[i] = t
	}
	return toks, nil
}

// disable turns auth off again, as root; with a fresh root token if the
// one it has is refused (a simple token expires after etcd's
// --auth-token-ttl without use).
func (a *etcdAuth) disable() error {
	off := func(tok string) error {
		_, err := call(tok, func(ctx context.Context) (*pb.AuthDisableResponse, error) {
			return a.auth.AuthDisable(ctx, &pb.AuthDisableRequest{})
		})
		return err
	}
	err := off(a.rootToken)
	if err == nil {
		return nil
	}
	tok, aerr := a.authenticate(rootUser, rootPassword)
	if aerr != nil {
		return fmt.Errorf("auth disable: %w; authenticate %s again: %w", err, rootUser, aerr)
	}
	return off(tok)
}
