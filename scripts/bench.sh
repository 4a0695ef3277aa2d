#!/usr/bin/env bash
# Builds tunneld and runs the tunnel benchmark (bench/tunnel_bench.cpp): a full
# tunnel (source localproxy, tunnel-relay over TLS, destination localproxy, a
# service) against direct loopback TCP, measured in the same run, printed
# next to issue 2's targets. See docs/benchmarks.md.
#
#   scripts/bench.sh                          # build/, 1 GiB per throughput run
#   scripts/bench.sh --json bench.json        # also machine-readable results
#   scripts/bench.sh --bytes 256MiB --runs 3  # other options go to tunnel-bench
#   BENCH_BUILD_DIR=build-release scripts/bench.sh
#                                             # another build dir; made with
#                                             # --buildtype=release if missing
#
# Run scripts/setup-deps.sh first on a fresh machine. The figures are only
# as quiet as the machine: the run prints the load average it started with.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."

build=${BENCH_BUILD_DIR:-build}

for tool in meson ninja openssl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench.sh: $tool not found; run scripts/setup-deps.sh first" >&2
    exit 1
  fi
done

case "${1:-}" in
  -h|--help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "tunnel-bench options:"
    [[ -x "$build/bench/tunnel-bench" ]] && exec "$build/bench/tunnel-bench" --help
    echo "  (build first to see them)"
    exit 0
    ;;
esac

if [[ ! -f "$build/build.ninja" ]]; then
  buildtype=debugoptimized
  [[ "$build" != build ]] && buildtype=release
  meson setup "$build" --buildtype="$buildtype"
fi
if grep -q '"name": "b_sanitize", "value": "[^n]' "$build/meson-info/intro-buildoptions.json" \
    2>/dev/null; then
  echo "bench.sh: $build is a sanitizer build; its figures mean little" >&2
fi
meson compile -C "$build" relay/tunnel-relay ctl/localproxy bench/tunnel-bench

args=()
if [[ " $* " != *" --bytes"* ]]; then
  args+=(--bytes 1GiB)
fi
exec "$build/bench/tunnel-bench" "${args[@]}" "$@"
