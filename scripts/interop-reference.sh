#!/usr/bin/env bash
# Interoperability runs against the reference localproxy
# (aws-samples/aws-iot-securetunneling-localproxy). Not part of CI.
#
# Builds the reference once into a cache folder outside the repository, builds
# our relay and localproxy, then runs both pairings (ours as source with the
# reference as destination, and the other way) through tunnel-relay on
# loopback: upload, download, echo, a slow reader (and several downloads at
# once at V3), SHA-256 checked, each case in a fresh tunnel. Prints ok /
# reference crash / stall per pairing, attributes every case that is not ok
# to the reference (with the evidence) or to our side, and exits 1 only when
# something is on our side.
#
#   REFERENCE_SRC=/path/to/aws-iot-securetunneling-localproxy \
#     scripts/interop-reference.sh --runs 20
#   scripts/interop-reference.sh --version V3 --runs 10 --control
#   scripts/interop-reference.sh --reference-src DIR --runs 5 --workload download
#   scripts/interop-reference.sh --ours websocket.max_frame_size=65536 --workload upload
#
# This script fetches nothing: get the reference source yourself (see
# docs/interop.md), e.g. `git clone --branch v3.3.1 --depth 1
# https://github.com/aws-samples/aws-iot-securetunneling-localproxy`.
# Needs Debian 12 packages: cmake, libboost1.81-all-dev (or the boost system,
# log, thread, program-options, date-time, filesystem, chrono -dev packages),
# libprotobuf-dev, protobuf-compiler, libssl-dev, zlib1g-dev.
#
# Environment:
#   REFERENCE_SRC        reference source tree (or --reference-src DIR)
#   REFERENCE_CACHE      where it is built (default ~/.cache/tunneld-reference);
#                        the binary is $REFERENCE_CACHE/build/bin/localproxy
#   REFERENCE_BIN        use this reference binary instead of building one
#   INTEROP_BUILD_DIR    our meson build dir (default build; release if made here)
#   INTEROP_JOBS         parallel compile jobs for both builds (default 2; they
#                        run under nice)
# Other options go to scripts/interop_reference.py (--help lists them).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."

src=${REFERENCE_SRC:-}
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --reference-src) src=$2; shift 2 ;;
    --reference-src=*) src=${1#*=}; shift ;;
    -h|--help)
      sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
      echo
      python3 scripts/interop_reference.py --help | sed -n '/^options:/,$p'
      exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done

cache=${REFERENCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tunneld-reference}
build=${INTEROP_BUILD_DIR:-build}
ref_bin=${REFERENCE_BIN:-$cache/build/bin/localproxy}
jobs=${INTEROP_JOBS:-${REFERENCE_JOBS:-2}}

if [[ -z "${REFERENCE_BIN:-}" && ! -x "$ref_bin" ]]; then
  if [[ -z "$src" || ! -f "$src/CMakeLists.txt" ]]; then
    echo "interop-reference: no reference build in $cache and no source tree;" \
         "set REFERENCE_SRC or pass --reference-src (see docs/interop.md)" >&2
    exit 2
  fi
  case "$(readlink -f "$cache")/" in
    "$(pwd -P)"/*) echo "interop-reference: the cache must be outside the repository" >&2
                   exit 2 ;;
  esac
  echo "interop-reference: building the reference from $src into $cache" >&2
  mkdir -p "$cache"
  # System dependencies only (LOCALPROXY_DEP_MODE=system never downloads);
  # BOOST_PKG_VERSION= lifts its Boost version pin so Debian's 1.81 is used.
  cmake -S "$src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
    -DLOCALPROXY_DEP_MODE=system -DBOOST_PKG_VERSION= -DPROTOBUF_PKG_VERSION= \
    -DLINK_STATIC_OPENSSL=OFF -DBUILD_TESTS=OFF -DLOCALPROXY_RELEASE=ON >&2
  nice -n 10 cmake --build "$cache/build" -j "$jobs" >&2
fi
[[ -x "$ref_bin" ]] || { echo "interop-reference: $ref_bin missing" >&2; exit 2; }

if [[ ! -f "$build/build.ninja" ]]; then
  meson setup "$build" --buildtype=release -Dtests=false -Dbench=false >&2
fi
nice -n 10 meson compile -C "$build" -j "$jobs" relay/tunnel-relay ctl/localproxy >&2

exec python3 scripts/interop_reference.py --build-dir "$build" --reference "$ref_bin" \
  "${args[@]}"
