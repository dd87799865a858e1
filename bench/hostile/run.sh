#!/usr/bin/env bash
# Hostile-client benchmark: bash bench/hostile/run.sh [flags of bench/hostile]
#
# Builds etcd (bench/etcd, for the member and `etcd grpc-proxy start`), this
# proxy (cmd/etcdproxy) and the benchmark (bench/hostile) into a temporary
# directory, then runs the benchmark with them: hostile clients beside a
# canary, through this proxy, etcd's proxy and etcd directly (e.g. -quick,
# -targets=etcdproxy, -phase=30s). The benchmark kills its children by PID
# when it exits. Results (results.md) and logs stay in the printed
# directory.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (see
# bench/build.sh).
set -uo pipefail

. "$(dirname "$0")/../build.sh"
bench_build hostile

bench_run hostile "etcd-data" -etcd="$OUT/etcd" -etcdproxy="$OUT/etcdproxy" "$@"
