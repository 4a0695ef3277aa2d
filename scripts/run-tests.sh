#!/usr/bin/env bash
# Builds tunneld and runs every test, twice: a normal build in build/ (gcc)
# and an ASan+UBSan build in build-asan/ (clang, with the libFuzzer targets:
# the sanitizer CI job, which also runs each fuzz target for FUZZ_SECONDS,
# default 10, two at a time). Ends with one line
# "N passed, N failed" (", N skipped" when some were skipped) counting every
# meson test of both builds (a build that fails to compile counts as one
# failure) and clang-tidy over every source file (scripts/tidy.sh --fast, one
# "test", run in the background while the tests run), and exits non-zero if
# anything failed.
#
#   scripts/run-tests.sh                    # both builds, all tests
#   scripts/run-tests.sh --no-asan          # only build/
#   scripts/run-tests.sh --asan-only        # only build-asan/
#   scripts/run-tests.sh --suite unit       # other arguments go to `meson test`
#   scripts/run-tests.sh integration-hostile
#   BUILD_DIR=b ASAN_BUILD_DIR=b-asan scripts/run-tests.sh   # other build dirs
#   TEST_JOBS=1 scripts/run-tests.sh        # one test at a time (default: 3 side by side)
#   TIDY=0 scripts/run-tests.sh             # without clang-tidy (it never runs for a chosen suite)
#   FUZZ_SECONDS=60 scripts/run-tests.sh --asan-only   # longer fuzz runs
#   ASAN_CC='ccache clang' ASAN_CXX='ccache clang++' scripts/run-tests.sh  # other compilers
#
# Run scripts/setup-deps.sh first on a fresh machine.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."

BUILD_DIR=${BUILD_DIR:-build}
ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
run_plain=1
run_asan=1
meson_test_args=()
while (($#)); do
  case "$1" in
    --no-asan) run_asan=0 ;;
    --asan-only) run_plain=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) meson_test_args+=("$1") ;;
  esac
  shift
done

for tool in meson ninja /usr/bin/python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run-tests.sh: $tool not found; run scripts/setup-deps.sh first" >&2
    exit 1
  fi
done

build_failures=0
ran_dirs=()
summary_notes=()

banner() { printf '\n=== %s ===\n' "$*"; }

# build DIR plain|asan [meson setup options...]: configure and compile;
# a build that fails is counted and left out of the rest.
built_dirs=()
build() {
  local dir=$1 kind=$2; shift 2
  banner "$dir: configure and compile"
  if [[ "$kind" == asan && -f "$dir/build.ninja" ]] && ! /usr/bin/python3 -c '
import json, sys
opts = json.load(open(sys.argv[1] + "/meson-info/intro-buildoptions.json"))
sys.exit(0 if any(o["name"] == "fuzz" and o["value"] for o in opts) else 1)' "$dir" 2>/dev/null; then
    # A build dir from before the sanitizer build moved to clang + fuzz.
    echo "$dir was configured without clang/-Dfuzz=true; configuring it again"
    rm -rf "$dir"
  fi
  if [[ ! -f "$dir/build.ninja" ]]; then
    if ! meson setup "$dir" "$@"; then
      build_failures=$((build_failures + 1))
      summary_notes+=("$dir: meson setup failed")
      return 0
    fi
  fi
  if ! meson compile -C "$dir"; then
    build_failures=$((build_failures + 1))
    summary_notes+=("$dir: compile failed")
    return 0
  fi
  built_dirs+=("$dir")
}

# run_tests DIR plain|asan
run_tests() {
  local dir=$1 kind=$2
  banner "$dir: meson test"
  rm -f "$dir/meson-logs/testlog.json"
  local extra=()
  if [[ "$kind" == asan ]]; then
    # Sanitized binaries are 2-3x slower: stretch meson's timeouts and the
    # harness's anti-hang waits (not its behavioural deadlines).
    extra=(--timeout-multiplier 3)
    export TUNNELD_TEST_TIMEOUT_SCALE=3
  else
    export TUNNELD_TEST_TIMEOUT_SCALE=1
  fi
  # A failing test must not stop the other build's run; the counts below decide.
  # Three suites side by side: alone, an integration suite keeps about a
  # quarter of one core busy (it mostly waits on timers, reconnects and
  # process start-up), so on 2 cores three at a time halve the wall time
  # (tests/integration/meson.build orders them longest first).
  rm -f "$dir/meson-logs/testlog-fuzz.json"
  if [[ "$kind" == asan && ${#meson_test_args[@]} -eq 0 ]]; then
    # The packaging checks do not depend on the build: the plain run has them.
    local skip_packaging=()
    ((run_plain)) && skip_packaging=(--no-suite packaging)
    meson test -C "$dir" --print-errorlogs --num-processes "${TEST_JOBS:-3}" \
      "${extra[@]}" --no-suite fuzz "${skip_packaging[@]}" || true
    # The fuzz targets: CPU-bound, fixed duration each, two at a time.
    meson test -C "$dir" --print-errorlogs --num-processes "${FUZZ_JOBS:-2}" \
      "${extra[@]}" --suite fuzz --logbase testlog-fuzz || true
  else
    meson test -C "$dir" --print-errorlogs --num-processes "${TEST_JOBS:-3}" \
      "${extra[@]}" "${meson_test_args[@]}" || true
  fi
  ran_dirs+=("$dir")
}

is_built() { local d; for d in "${built_dirs[@]}"; do [[ $d == "$1" ]] && return 0; done; return 1; }

# Debug information: line tables only (-g1). Backtraces and sanitizer reports
# keep every file:line, and the builds take a fifth less time than with full
# -g (measured: 258 against 318 s for build/). For a debugger, configure a
# build directory of your own (meson setup build-dbg).
debug_info=-Dcpp_args=-g1

# Both builds first, then the tests: clang-tidy (scripts/tidy.sh --fast,
# every source file of both builds) runs meanwhile at the lowest priority,
# on the CPU the tests leave idle (many wait on timers or on one process).
if ((run_plain)); then
  build "$BUILD_DIR" plain "$debug_info"
fi
if ((run_asan)); then
  # clang: libFuzzer comes with it, and it compiles this code base faster
  # than gcc (docs/testing.md). -Dfuzz=true instruments the libraries for
  # coverage (-fsanitize=fuzzer-no-link) and builds tests/fuzz.
  CC=${ASAN_CC:-clang} CXX=${ASAN_CXX:-clang++} \
    build "$ASAN_BUILD_DIR" asan -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbench=false -Dfuzz=true "$debug_info"
fi

# clang-tidy runs with the whole suite only (not for a chosen test), and not
# with TIDY=0. Its result counts as one test in the summary.
tidy_pid=""
tidy_log=""
if [[ ${TIDY:-1} != 0 && ${#meson_test_args[@]} -eq 0 && ${#built_dirs[@]} -gt 0 ]]; then
  tidy_log=$(mktemp /tmp/tunneld-tidy.XXXXXX)
  tidy_builds=()
  for d in "${built_dirs[@]}"; do tidy_builds+=(--build "$d"); done
  banner "clang-tidy (in the background): ${built_dirs[*]}"
  nice -n 19 ./scripts/tidy.sh --fast "${tidy_builds[@]}" >"$tidy_log" 2>&1 &
  tidy_pid=$!
fi

if is_built "$BUILD_DIR"; then
  run_tests "$BUILD_DIR" plain
fi
if is_built "$ASAN_BUILD_DIR"; then
  # halt/abort on the first report; leaks are errors too (LeakSanitizer).
  export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_summary=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1}"
  run_tests "$ASAN_BUILD_DIR" asan
fi

tidy_result=""
if [[ -n $tidy_pid ]]; then
  banner "clang-tidy"
  if wait "$tidy_pid"; then tidy_result=ok; else tidy_result=FAIL; fi
  # The findings (or the last lines of a run that broke) and the summary.
  if [[ $tidy_result == FAIL ]]; then cat "$tidy_log"; else tail -n 7 "$tidy_log"; fi
  rm -f "$tidy_log"
fi

banner "summary"
/usr/bin/python3 - "$build_failures" "$tidy_result" "${ran_dirs[@]}" "${summary_notes[@]/#/NOTE:}" <<'PY'
import json, os, sys

build_failures = int(sys.argv[1])
tidy_result = sys.argv[2]
passed = failed = skipped = 0
PASS = {"OK", "EXPECTEDFAIL"}
SKIP = {"SKIP"}
for arg in sys.argv[3:]:
    if arg.startswith("NOTE:"):
        print(f"FAIL  {arg[5:]}")
        continue
    log = os.path.join(arg, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        print(f"FAIL  {arg}: no {log} (meson test did not run)")
        failed += 1
        continue
    logs = [log]
    fuzz_log = os.path.join(arg, "meson-logs", "testlog-fuzz.json")
    if os.path.exists(fuzz_log):
        logs.append(fuzz_log)
    for log in logs:
        with open(log) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    t = json.loads(line)
                except ValueError:
                    continue
                result = t.get("result", "?")
                name = t.get("name", "?")
                dur = t.get("duration", 0) or 0
                if result in PASS:
                    passed += 1
                    tag = "ok"
                elif result in SKIP:
                    skipped += 1
                    tag = "skip"
                else:
                    failed += 1
                    tag = "FAIL"
                print(f"{tag:5} {arg}: {name} ({result}, {dur:.1f} s)")
failed += build_failures
if tidy_result:
    print(f"{tidy_result:5} clang-tidy (scripts/tidy.sh --fast)")
    if tidy_result == "ok":
        passed += 1
    else:
        failed += 1
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed else 0)
PY
