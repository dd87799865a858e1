#!/usr/bin/env bash
# etcd's own end-to-end tests, run with this proxy in front of every member:
#
#   bash bench/etcde2e/run.sh                 # the watch and proxy subset below
#   RUN='^TestCtlV3Put.*$' bash bench/etcde2e/run.sh
#   REFERENCE=1 bash bench/etcde2e/run.sh     # the same with etcd's own grpc-proxy
#
# etcd's e2e framework (go.etcd.io/etcd/tests/v3, build tag cluster_proxy)
# starts `<bin-dir>/etcd grpc-proxy start ...` next to each member and points
# its clients at the proxy. Here <bin-dir>/etcd is a small wrapper: for
# `grpc-proxy start` it execs this proxy (unless REFERENCE=1), for anything
# else it is etcd v3.7.3. The subset includes etcd's watch-delay, progress,
# compaction and low-permission watch tests, which etcd's tree excludes in
# proxy mode (//go:build !cluster_proxy); this script lifts that exclusion in
# its copy of the tests. Everything is built in a temporary directory; the
# repository and go.mod are not touched. Needs only Go and the module proxy.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=v3.7.3
RUN=${RUN:-'^(TestCtlV3Watch.*|TestCtlV3AuthAndWatch.*|TestCtlV3MakeMirrorWithWatchRev|TestGrpcProxy.*|TestWatchDelayForPeriodicProgressNotification|TestWatchDelayForManualProgressNotification|TestWatchDelayForEvent|TestDeleteEventDrop_Issue18089|TestStartWatcherFromCompactedRevision|TestWatchWithLowPermissionUser|TestCtlV3Put.*|TestCtlV3Get.*|TestCtlV3Del.*|TestCtlV3Lease.*|TestCtlV3Elect|TestCtlV3Lock.*)$'}
WORK=$(mktemp -d /tmp/etcde2e.XXXXXX)
BIN=$WORK/bin
mkdir -p "$BIN" "$WORK/wrap/etcd" "$WORK/wrap/etcdctl" "$WORK/wrap/etcdutl"
echo "building into $WORK" >&2

(cd "$ROOT" && go build -o "$BIN/etcdproxy" ./cmd/etcdproxy)

MODCACHE=$(go env GOMODCACHE)
cd "$WORK/wrap"
cat >go.mod <<MOD
module etcde2ewrap

go 1.26
MOD
cat >etcd/main.go <<'GO'
// Command etcd is etcd, except that `etcd grpc-proxy start ...` runs the
// proxy at proxy (set at build time; etcd's e2e framework does not pass its
// environment on) with the same arguments.
package main

import (
	"fmt"
	"os"
	"syscall"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

var proxy string

func main() {
	if proxy != "" && len(os.Args) >= 3 && os.Args[1] == "grpc-proxy" && os.Args[2] == "start" {
		if err := syscall.Exec(proxy, append([]string{proxy}, os.Args[1:]...), os.Environ()); err != nil {
			fmt.Fprintf(os.Stderr, "etcd wrapper: exec %s: %v\n", proxy, err)
			os.Exit(127)
		}
	}
	etcdmain.Main(os.Args)
}
GO
cat >etcdctl/main.go <<'GO'
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
GO
go mod download go.etcd.io/etcd/etcdutl/v3@$VERSION
cp "$MODCACHE/go.etcd.io/etcd/etcdutl/v3@$VERSION/main.go" "$MODCACHE/go.etcd.io/etcd/etcdutl/v3@$VERSION/ctl.go" etcdutl/
chmod u+w etcdutl/*.go
go get go.etcd.io/etcd/server/v3@$VERSION go.etcd.io/etcd/etcdctl/v3@$VERSION go.etcd.io/etcd/etcdutl/v3@$VERSION >/dev/null 2>&1
go mod tidy >/dev/null 2>&1
PROXY=$BIN/etcdproxy
if [ "${REFERENCE:-}" = 1 ]; then
	PROXY= # etcd's own grpc-proxy
	echo "running against etcd's own grpc-proxy" >&2
fi
go build -ldflags "-X main.proxy=$PROXY" -o "$BIN/etcd" ./etcd
for b in etcdctl etcdutl; do go build -o "$BIN/$b" "./$b"; done

# A writable copy of etcd's tests module, without its ../ replace directives.
go mod download go.etcd.io/etcd/tests/v3@$VERSION
cp -r "$MODCACHE/go.etcd.io/etcd/tests/v3@$VERSION" "$WORK/tests"
chmod -R u+w "$WORK/tests"
cd "$WORK/tests"
for r in $(go mod edit -json | jq -r '.Replace[]?.Old.Path'); do go mod edit -dropreplace="$r"; done
sed -i 's|^//go:build !cluster_proxy$|//go:build cluster_proxy|' e2e/watch_test.go

echo "go test -tags cluster_proxy ./e2e -run '$RUN'" >&2
GOFLAGS=-mod=mod go test -v -count=1 -p 1 -timeout 40m -tags cluster_proxy ./e2e -run "$RUN" -args -bin-dir="$BIN" 2>&1 | tee "$WORK/e2e.log" |
	grep -E '^(--- |ok|FAIL|PASS)' || true
echo "full log: $WORK/e2e.log" >&2
grep -q '^ok' "$WORK/e2e.log"
