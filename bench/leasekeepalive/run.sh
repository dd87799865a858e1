#!/usr/bin/env bash
# Lease keep-alive benchmark: bash bench/leasekeepalive/run.sh [flags of bench/leasekeepalive]
#
# Builds etcd (bench/etcd: the member, and `etcd grpc-proxy start`), this
# proxy (cmd/etcdproxy) and the benchmark (bench/leasekeepalive) into a
# temporary directory, then runs the benchmark with them. Any arguments are
# passed on (e.g. -quick, -leases=20000 -dup=3, -after=idle,
# -targets=etcdproxy). The benchmark starts etcd and the two proxies as its
# children and kills them by PID when it exits; this script only waits for
# it. Results (results.md) and the logs stay in the printed directory.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (git archive)
# instead of the working tree, e.g. ETCDPROXY_REF=HEAD to measure the last
# commit while the working tree holds changes in progress.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(mktemp -d /tmp/leasekeepalive.XXXXXX)
REF=${ETCDPROXY_REF:-}

log() { echo "[$(date +%T)] $*" >&2; }

log "building into $OUT (source $ROOT, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-git))"
if [ -n "$REF" ]; then
	SRC="$OUT/src"
	mkdir -p "$SRC" && git -C "$ROOT" archive "$REF" | tar -x -C "$SRC" || {
		log "cannot export $REF"
		exit 1
	}
	LABEL="etcdproxy built from $REF ($(git -C "$ROOT" rev-parse --short "$REF"))"
else
	SRC="$ROOT"
	LABEL="etcdproxy built from the working tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-git)"
	if [ -n "$(git -C "$ROOT" status --short 2>/dev/null)" ]; then
		LABEL="$LABEL with uncommitted changes (see git-status.txt)"
	fi
fi
(cd "$ROOT" && go build -o "$OUT/etcd" ./bench/etcd &&
	go build -o "$OUT/leasekeepalive" ./bench/leasekeepalive) &&
	(cd "$SRC" && go build -o "$OUT/etcdproxy" ./cmd/etcdproxy) || {
	log "build failed"
	exit 1
}
git -C "$ROOT" status --short >"$OUT/git-status.txt" 2>/dev/null
git -C "$ROOT" diff >"$OUT/git-diff.txt" 2>/dev/null

# In the foreground, so that a Ctrl-C reaches the benchmark, which then
# kills its children.
"$OUT/leasekeepalive" -etcd="$OUT/etcd" -etcdproxy="$OUT/etcdproxy" \
	-dir="$OUT/run" -out="$OUT/results.md" -label="$LABEL" "$@"
rc=$?
rm -rf "$OUT/run/etcd-data" "$OUT/src"
log "exit $rc; results and logs in $OUT"
exit $rc
