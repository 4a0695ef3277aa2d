#!/usr/bin/env bash
# Long fuzzing runs of the libFuzzer targets (tests/fuzz/), outside CI. Each
# target grows its own corpus outside the source tree, starting from the
# committed seeds (tests/fuzz/corpus/<target>, only read). Prints, per target,
# the executions done and the findings; exits 1 if any target found
# something. Findings (crash-*, leak-*, timeout-*, oom-*) stay in
# CORPUS/artifacts/<target>/: reproduce one with `FUZZ_EXE FILE`.
#
#   scripts/fuzz.sh                          # every target, 300 s each
#   scripts/fuzz.sh --seconds 3600 session_machine control
#   scripts/fuzz.sh --runs 10000000 --jobs 2 record_decoder
#   scripts/fuzz.sh --list                   # the target names
#
# Options: --seconds N (per target and job; default 300), --runs N (instead
# of a time: executions per job), --jobs N (parallel processes per target,
# default 1), --corpus DIR (default ~/.cache/tunneld-fuzz), --build DIR (a
# build configured with -Dfuzz=true; default build-asan, as run-tests.sh
# makes it). Extra libFuzzer flags: FUZZ_FLAGS="-max_len=4096".
# Run it under `nice` on a shared machine.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
root=$PWD

seconds=300
runs=""
jobs=1
corpus_root=${XDG_CACHE_HOME:-$HOME/.cache}/tunneld-fuzz
build=build-asan
targets=()
list=0
while (($#)); do
  case "$1" in
    --seconds) seconds=$2; shift ;;
    --runs) runs=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --corpus) corpus_root=$2; shift ;;
    --build) build=$2; shift ;;
    --list) list=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done

all=()
for d in tests/fuzz/corpus/*/; do all+=("$(basename "$d")"); done
if ((list)); then printf '%s\n' "${all[@]}"; exit 0; fi
((${#targets[@]})) || targets=("${all[@]}")

if [[ ! -d "$build/tests/fuzz" ]]; then
  echo "fuzz.sh: no fuzz targets in $build/; configure a build with clang and -Dfuzz=true, e.g." >&2
  echo "  CC=clang CXX=clang++ meson setup $build -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false" >&2
  echo "(scripts/run-tests.sh --asan-only does this), then meson compile -C $build" >&2
  exit 2
fi
case "$corpus_root" in
  "$root"/tests/*|tests/*) echo "fuzz.sh: keep the corpus outside tests/ (--corpus)" >&2; exit 2 ;;
esac

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:print_summary=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

status=0
printf '%-18s %15s %9s %8s  %s\n' target executions exec/s findings corpus
for t in "${targets[@]}"; do
  exe="$build/tests/fuzz/fuzz-${t//_/-}"
  if [[ ! -x "$exe" ]]; then
    echo "fuzz.sh: $exe not built (meson compile -C $build)" >&2
    status=1
    continue
  fi
  corpus="$corpus_root/$t"
  artifacts="$corpus_root/artifacts/$t"
  logs="$corpus_root/logs/$t"
  mkdir -p "$corpus" "$artifacts" "$logs"
  rm -f "$logs"/*.log
  limit=(-max_total_time="$seconds")
  [[ -n "$runs" ]] && limit=(-runs="$runs")
  before=$(find "$artifacts" -type f | wc -l)
  start=$(date +%s)
  flags=("${limit[@]}" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1
         -artifact_prefix="$artifacts/" ${FUZZ_FLAGS:-})
  exe_abs=$(readlink -f "$exe")
  if ((jobs > 1)); then
    # libFuzzer writes fuzz-<n>.log in the working directory, one per job.
    (cd "$logs" && "$exe_abs" "${flags[@]}" -jobs="$jobs" -workers="$jobs" \
       "$corpus" "$root/tests/fuzz/corpus/$t" >/dev/null 2>&1) || true
  else
    "$exe_abs" "${flags[@]}" "$corpus" "$root/tests/fuzz/corpus/$t" >"$logs/fuzz-0.log" 2>&1 || true
  fi
  elapsed=$(( $(date +%s) - start ))
  execs=$(cat "$logs"/fuzz-*.log 2>/dev/null | awk '/stat::number_of_executed_units:/ { n += $2 } END { print n + 0 }')
  found=$(( $(find "$artifacts" -type f | wc -l) - before ))
  # A crash that left no artifact (e.g. in the runner) still shows in the log.
  if ((found == 0)) && grep -qE '^==[0-9]+==ERROR|deadly signal|SUMMARY: (Address|Undefined|Leak)' "$logs"/fuzz-*.log 2>/dev/null; then
    found=1
  fi
  rate=$(( elapsed > 0 ? execs / elapsed : execs ))
  printf '%-18s %15s %9s %8s  %s\n' "$t" "$execs" "$rate" "$found" "$(find "$corpus" -type f | wc -l) files"
  if ((found)); then
    status=1
    echo "  findings in $artifacts/, log in $logs/" >&2
  fi
done
exit $status
