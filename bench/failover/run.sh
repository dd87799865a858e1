#!/usr/bin/env bash
# Failover benchmark: bash bench/failover/run.sh [flags of bench/failover]
#
# Builds etcd (bench/etcd, for `etcd grpc-proxy start`), this proxy
# (cmd/etcdproxy) and the benchmark (bench/failover) into a temporary
# directory, then runs the benchmark with them. Any arguments are passed on
# (e.g. -scenarios=silent -fault=10s -put-interval=20ms -faulty-leader).
# The benchmark starts the etcd cluster in its own process and the two
# proxies as its children, and kills the children by PID when it exits;
# this script only waits for it. Results (results.md), the proxies' and
# etcd's logs stay in the printed directory.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (see
# bench/build.sh).
set -uo pipefail

. "$(dirname "$0")/../build.sh"
bench_build failover

# In the foreground, so that a Ctrl-C reaches the benchmark, which then
# kills its children.
"$OUT/failover" -etcd="$OUT/etcd" -etcdproxy="$OUT/etcdproxy" \
	-dir="$OUT/run" -out="$OUT/results.md" -label="$LABEL" "$@"
rc=$?
rm -rf "$OUT"/run/*/m[0-9] "$OUT/src"
log "exit $rc; results and logs in $OUT"
exit $rc
