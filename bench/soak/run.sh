#!/usr/bin/env bash
# Soak benchmark: bash bench/soak/run.sh [flags of bench/soak]
#
# Builds this proxy (cmd/etcdproxy) and the benchmark (bench/soak) into a
# temporary directory (bench/build.sh builds etcd too, unused here), then
# runs the benchmark with them. Any arguments are passed on (e.g. -quick,
# -duration=30m, -watchers=5000). The benchmark runs the 3-member etcd
# cluster in its own process and the proxy as its child, and kills the
# child by PID when it exits; this script only waits for it. The report
# (results.md) and the proxy's and etcd's logs stay in the printed
# directory; etcd's data is removed.
#
# ETCDPROXY_REF=<git ref> builds the proxy from that commit (see
# bench/build.sh).
set -uo pipefail

. "$(dirname "$0")/../build.sh"
bench_build soak

bench_run soak "etcd etcdproxy.data" -etcdproxy="$OUT/etcdproxy" "$@"
