package shell

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
)

// authServer forwards the Auth service. Users and roles belong to the whole
// cluster, so under a namespace only reads and Authenticate pass; changes
// are refused with PermissionDenied.
type authServer struct {
	pb.UnimplementedAuthServer
	up       pb.AuthClient
	nsActive bool
	ids      *identities // learns which user each token it passes on is
}

// change forwards a call that alters cluster-wide auth state.
func change[Req, Resp any](s *authServer, ctx context.Context, call func(context.Context, Req, ...grpc.CallOption) (Resp, error), r Req) (Resp, error) {
	if s.nsActive {
		var zero Resp
		return zero, rpctypes.ErrGRPCPermissionDenied
	}
	return forward(ctx, call, r)
}

func (s *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	return change(s, ctx, s.up.AuthEnable, r)
}

func (s *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	return change(s, ctx, s.up.AuthDisable, r)
}

func (s *authServer) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	return forward(ctx, s.up.AuthStatus, r)
}

func (s *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	resp, err := forward(ctx, s.up.Authenticate, r)
	if err == nil && s.ids != nil {
		s.ids.learn(resp.Token, r.Name)
	}
	return resp, err
}

func (s *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	return change(s, ctx, s.up.UserAdd, r)
}

func (s *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	return forward(ctx, s.up.UserGet, r)
}

func (s *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	return forward(ctx, s.up.UserList, r)
}

func (s *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	return change(s, ctx, s.up.UserDelete, r)
}

func (s *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	return change(s, ctx, s.up.UserChangePassword, r)
}

func (s *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	return change(s, ctx, s.up.UserGrantRole, r)
}

func (s *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	return change(s, ctx, s.up.UserRevokeRole, r)
}

func (s *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	return change(s, ctx, s.up.RoleAdd, r)
}

func (s *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	return forward(ctx, s.up.RoleGet, r)
}

func (s *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	return forward(ctx, s.up.RoleList, r)
}

func (s *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	return change(s, ctx, s.up.RoleDelete, r)
}

func (s *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	return change(s, ctx, s.up.RoleGrantPermission, r)
}

func (s *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	return change(s, ctx, s.up.RoleRevokePermission, r)
}
