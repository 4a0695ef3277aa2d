#!/usr/bin/env bash
# Builds tunneld, tunnelctl, tunnel-relay and localproxy and runs the daemon
# benchmark (bench/daemon_bench.cpp): idle RSS of one tunneld with 1, 100 and
# 1000 sessions connected to a loopback relay, tunnelctl open -> connected
# time, and the throughput of 4 concurrent tunnels against direct loopback
# TCP, printed next to issue 3's targets. See docs/benchmarks.md.
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

for tool in meson ninja openssl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "daemon-bench.sh: $tool not found; run scripts/setup-deps.sh first" >&2
    exit 1
  fi
done

case "${1:-}" in
  -h|--help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "daemon-bench options:"
    [[ -x "$build/bench/daemon-bench" ]] && exec "$build/bench/daemon-bench" --help
    echo "  (build first to see them)"
    exit 0
    ;;
esac

if [[ ! -f "$build/build.ninja" ]]; then
  meson setup "$build" --buildtype=release
fi
if grep -q '"name": "b_sanitize", "value": "[^n]' "$build/meson-info/intro-buildoptions.json" \
    2>/dev/null; then
  echo "daemon-bench.sh: $build is a sanitizer build; its figures mean little" >&2
fi
meson compile -C "$build" daemon/tunneld ctl/tunnelctl:executable relay/tunnel-relay \
  ctl/localproxy:executable bench/daemon-bench

exec "$build/bench/daemon-bench" "$@"
