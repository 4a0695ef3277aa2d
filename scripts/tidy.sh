#!/usr/bin/env bash
# Runs clang-tidy (the repository's .clang-tidy) over every C++ source file
# the build compiles: daemon/, ctl/, relay/, bench/, tests/ (the project's
# headers are checked through HeaderFilterRegex; generated protobuf code is
# not ours and is skipped). Prints each file with findings and its output,
# then one line "clang-tidy: N files, N with findings"; exits 1 if any file
# has a finding (the config makes every warning an error).
#
#   scripts/tidy.sh                  # the files of build-asan/ and build/
#   scripts/tidy.sh --build b1 --build b2   # other configured build dirs
#   scripts/tidy.sh --jobs 1 daemon/core/service_link.cpp   # some files only
#   scripts/tidy.sh --fast           # what run-tests.sh (CI) runs, see below
#
# --fast: the same checks, but the static analyzer (clang-analyzer-*) does
# not follow calls into C++ functions (ipa=basic-inlining): about 900
# CPU-seconds for every file instead of 1050 (the relay server alone: 21 s
# instead of 68 s; the AST matchers, not the analyzer, cost the rest). CI
# runs this form; the default, deep one is for after a large change
# (docs/testing.md).
#
# Files come from each build's compile_commands.json, the first build that
# compiles a file giving its flags: the sanitizer build (clang, with the
# fuzz targets) first, then the plain one (gcc, with the benchmarks).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
root=$PWD

builds=()
jobs=$(nproc)
fast=0
files=()
while (($#)); do
  case "$1" in
    --build) builds+=("$2"); shift ;;
    --jobs) jobs=$2; shift ;;
    --fast) fast=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "tidy.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) files+=("$(readlink -f "$1")") ;;
  esac
  shift
done

tidy=$(command -v clang-tidy || command -v clang-tidy-14 || true)
if [[ -z $tidy ]]; then
  echo "tidy.sh: clang-tidy not found; run scripts/setup-deps.sh" >&2
  exit 2
fi
((${#builds[@]})) || builds=(build-asan build)
for b in "${builds[@]}"; do
  if [[ ! -f $b/compile_commands.json ]]; then
    echo "tidy.sh: no $b/compile_commands.json; configure that build first" \
      "(scripts/run-tests.sh does)" >&2
    exit 2
  fi
done

# "<build dir>\t<file>" per translation unit: each source file once (a file
# compiled into two targets or two builds is checked once), generated files
# (the builds' protobuf code) and files outside the tree left out.
mapfile -t units < <(/usr/bin/python3 - "$root" "${files[@]/#/FILE:}" "${builds[@]}" <<'PY'
import json, os, sys
root = sys.argv[1]
wanted = {a[5:] for a in sys.argv[2:] if a.startswith("FILE:")}
builds = [os.path.realpath(a) for a in sys.argv[2:] if not a.startswith("FILE:")]
seen = set()
for build in builds:
    for entry in json.load(open(os.path.join(build, "compile_commands.json"))):
        path = os.path.realpath(os.path.join(entry["directory"], entry["file"]))
        if not path.startswith(root + "/") or any(path.startswith(b + "/") for b in builds):
            continue
        if (wanted and path not in wanted) or path in seen:
            continue
        seen.add(path)
        print(f"{build}\t{path}")
PY
)
if ((${#units[@]} == 0)); then
  echo "tidy.sh: no such file in the builds' compile_commands.json: ${files[*]}" >&2
  exit 2
fi

config=""
if ((fast)); then
  grep -q '^CheckOptions' .clang-tidy &&
    { echo "tidy.sh: --fast cannot add to .clang-tidy's own CheckOptions; merge them here" >&2; exit 2; }
  config="$(cat .clang-tidy)
CheckOptions:
  - key: clang-analyzer-ipa
    value: basic-inlining"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# One clang-tidy per file, $jobs at a time; each file's output goes to its
# own log (numbered by position) so that parallel runs do not interleave.
export TIDY=$tidy TIDY_OUT=$out TIDY_CONFIG=$config
for i in "${!units[@]}"; do
  printf '%s\0%s\0%s\0' "$i" "${units[$i]%%$'\t'*}" "${units[$i]#*$'\t'}"
done |
  xargs -0 -n 3 -P "$jobs" sh -c \
    'start=$(date +%s%N)
     "$TIDY" -p "$2" --quiet ${TIDY_CONFIG:+"--config=$TIDY_CONFIG"} "$3" >"$TIDY_OUT/$1.log" 2>&1 || echo "$3" >"$TIDY_OUT/$1.failed"
     echo "$(( ($(date +%s%N) - start) / 1000000 )) $3" >"$TIDY_OUT/$1.ms"' sh
failed=0
for f in "$out"/*.failed; do
  [[ -e $f ]] || continue
  failed=$((failed + 1))
  file=$(cat "$f")
  echo "--- ${file#"$root"/}"
  grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$|^Suppressed [0-9]+ warnings|^Use -header-filter|^[0-9]+ warnings? treated as errors' \
    "${f%.failed}.log" || true
done
echo "slowest files (ms):"
cat "$out"/*.ms 2>/dev/null | sort -rn | head -5 | sed "s|$root/||; s/^/  /"
echo "clang-tidy: ${#units[@]} files, $failed with findings"
((failed == 0))
