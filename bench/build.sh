# Sourced by the benchmarks' run.sh (bench_run, below, then runs the
# benchmark): bench_build NAME builds etcd
# (bench/etcd: the member, and `etcd grpc-proxy start`), this proxy
# (cmd/etcdproxy) and the benchmark bench/NAME into a new temporary
# directory $OUT, and sets LABEL to say which proxy was built.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (git archive)
# instead of the working tree, e.g. ETCDPROXY_REF=HEAD to measure the last
# commit while the working tree holds changes in progress.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { echo "[$(date +%T)] $*" >&2; }

bench_build() {
	local name=$1 ref=${ETCDPROXY_REF:-} src
	OUT=$(mktemp -d "/tmp/$name.XXXXXX")
	log "building into $OUT (source $ROOT, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-git))"
	if [ -n "$ref" ]; then
		src="$OUT/src"
		mkdir -p "$src" && git -C "$ROOT" archive "$ref" | tar -x -C "$src" || {
			log "cannot export $ref"
			exit 1
		}
		LABEL="etcdproxy built from $ref ($(git -C "$ROOT" rev-parse --short "$ref"))"
	else
		src="$ROOT"
		LABEL="etcdproxy built from the working tree at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo no-git)"
		if [ -n "$(git -C "$ROOT" status --short 2>/dev/null)" ]; then
			LABEL="$LABEL with uncommitted changes (see git-status.txt)"
		fi
	fi
	(cd "$ROOT" && go build -o "$OUT/etcd" ./bench/etcd &&
		go build -o "$OUT/$name" "./bench/$name") &&
		(cd "$src" && go build -o "$OUT/etcdproxy" ./cmd/etcdproxy) || {
		log "build failed"
		exit 1
	}
	git -C "$ROOT" status --short >"$OUT/git-status.txt" 2>/dev/null
	git -C "$ROOT" diff >"$OUT/git-diff.txt" 2>/dev/null
}

# bench_run NAME CLEAN ARGS...: runs $OUT/NAME in the foreground (so that a
# Ctrl-C reaches it, and it kills its children) with ARGS after -dir, -out
# and -label, then removes CLEAN (space-separated globs under $OUT/run: the
# data directories) and the exported source, says where the results and
# logs are, and exits with the benchmark's status.
bench_run() {
	local name=$1 clean=$2 rc
	shift 2
	"$OUT/$name" -dir="$OUT/run" -out="$OUT/results.md" -label="$LABEL" "$@"
	rc=$?
	(cd "$OUT/run" 2>/dev/null && rm -rf $clean)
	rm -rf "$OUT/src"
	log "exit $rc; results and logs in $OUT"
	exit $rc
}
