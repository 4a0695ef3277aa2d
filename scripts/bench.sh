#!/usr/bin/env bash
# Builds tunneld and runs the tunnel benchmark (bench/tunnel_bench.cpp): a full
# tunnel (source localproxy, tunnel-relay over TLS, destination localproxy, a
# service) against direct loopback TCP, measured in the same run, printed
# next to the targets. See docs/benchmarks.md.
#
#   scripts/bench.sh                          # build/, 1 GiB per throughput run
#   scripts/bench.sh --json bench.json        # also machine-readable results
#   scripts/bench.sh --bytes 256MiB --runs 3  # other options go to tunnel-bench
#   scripts/bench.sh --reference PATH         # also the reference localproxy
#                                             # binary PATH at both ends
#   BENCH_BUILD_DIR=build-release scripts/bench.sh
#                                             # another build dir; made with
#                                             # --buildtype=release if missing
#
# Run scripts/setup-deps.sh first on a fresh machine. The figures are only
# as quiet as the machine: the run prints the load average it started with.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."

build=${BENCH_BUILD_DIR:-build}
buildtype=debugoptimized
[[ "$build" != build ]] && buildtype=release
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
bench_prepare "$0" "$build" "$buildtype" 17 bench/tunnel-bench \
  relay/tunnel-relay ctl/localproxy:executable -- "$@"

args=()
if [[ " $* " != *" --bytes"* ]]; then
  args+=(--bytes 1GiB)
fi
exec "$build/bench/tunnel-bench" "${args[@]}" "$@"
