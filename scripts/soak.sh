#!/usr/bin/env bash
# The long form of the soak test: tests/integration/test_soak.py
# with 10,000 connect/echo/close cycles through one tunnel and 1,000 sessions
# opened, connected and closed through tunnelctl in one tunneld, checking that
# fds, RSS (and tunneld's libuv handles) are as flat at the end as at the start.
# CI runs the same script with 300 and 100 (meson test integration-soak).
#
#   scripts/soak.sh                       # build/, 10,000 cycles, 1,000 sessions
#   scripts/soak.sh --asan                # build-asan/ (LeakSanitizer on), same sizes
#   CYCLES=50000 SESSIONS=5000 scripts/soak.sh
#   BUILD_DIR=b scripts/soak.sh cycles    # other arguments select cases by substring
#
# Figures are printed and written as JSON to $SOAK_JSON (default
# <build dir>/soak-figures.json). The build must exist (meson compile first).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."

BUILD_DIR=${BUILD_DIR:-build}
cases=()
while (($#)); do
  case "$1" in
    --asan)
      BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
      export TUNNELD_TEST_TIMEOUT_SCALE=${TUNNELD_TEST_TIMEOUT_SCALE:-3}
      export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_summary=1}"
      export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1}"
      ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) cases+=("$1") ;;
  esac
  shift
done

for bin in relay/tunnel-relay ctl/localproxy daemon/tunneld ctl/tunnelctl; do
  if [[ ! -x "$BUILD_DIR/$bin" ]]; then
    echo "soak.sh: $BUILD_DIR/$bin is not built (meson compile -C $BUILD_DIR)" >&2
    exit 1
  fi
done

export TUNNELD_SOAK_CYCLES=${CYCLES:-10000}
export TUNNELD_SOAK_SESSIONS=${SESSIONS:-1000}
export TUNNELD_SOAK_JSON=${SOAK_JSON:-$BUILD_DIR/soak-figures.json}
rm -f "$TUNNELD_SOAK_JSON"
echo "soak: $TUNNELD_SOAK_CYCLES cycles, $TUNNELD_SOAK_SESSIONS sessions, $BUILD_DIR"
status=0
/usr/bin/python3 tests/integration/test_soak.py "$BUILD_DIR" "${cases[@]}" || status=$?
[[ -f "$TUNNELD_SOAK_JSON" ]] && echo "figures: $TUNNELD_SOAK_JSON"
exit "$status"
