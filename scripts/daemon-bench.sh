#!/usr/bin/env bash
# Builds tunneld, tunnelctl, tunnel-relay and localproxy and runs the daemon
# benchmark (bench/daemon_bench.cpp): idle RSS of one tunneld with 1, 100 and
# 1000 sessions connected to a loopback relay, tunnelctl open -> connected
# time, and the throughput of 4 concurrent tunnels against direct loopback
# TCP, printed next to their targets. See docs/benchmarks.md.
#
#   scripts/daemon-bench.sh                        # build-release/, 256 MiB per stream
#   scripts/daemon-bench.sh --json dbench.json     # also machine-readable results
#   scripts/daemon-bench.sh --sessions 1,100 --bytes 64MiB   # a quicker run
#   BENCH_BUILD_DIR=build-dbench scripts/daemon-bench.sh
#                                                  # another build dir; made with
#                                                  # --buildtype=release if missing
#
# Run as root to let the benchmark raise the children's RLIMIT_NOFILE hard
# limit (1000 TLS sessions need more than 1024 descriptors in tunneld and in
# the relay). The run prints the load average it started and ended with.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."

build=${BENCH_BUILD_DIR:-build-release}
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_prepare "$0" "$build" release 17 bench/daemon-bench \
  daemon/tunneld ctl/tunnelctl:executable relay/tunnel-relay ctl/localproxy:executable -- "$@"

exec "$build/bench/daemon-bench" "$@"
