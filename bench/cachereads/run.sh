#!/usr/bin/env bash
# Read cache benchmark: bash bench/cachereads/run.sh [flags of bench/cachereads]
#
# Builds etcd (bench/etcd: the member, and `etcd grpc-proxy start`), this
# proxy (cmd/etcdproxy) and the benchmark (bench/cachereads) into a
# temporary directory, then runs the benchmark with them. Any arguments are
# passed on (e.g. -quick, -duration=20s, -targets=direct,etcdproxy,
# -etcdproxy-flags=--cache-consistent-reads=false). The benchmark starts
# etcd and each proxy as its children and kills them by PID when done with
# them; this script only waits for it. Results (results.md) and the logs
# stay in the printed directory.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (see
# bench/build.sh).
set -uo pipefail

. "$(dirname "$0")/../build.sh"
bench_build cachereads

bench_run cachereads "etcd-data" -etcd="$OUT/etcd" -etcdproxy="$OUT/etcdproxy" "$@"
