# Shared by scripts/bench.sh and scripts/daemon-bench.sh (sourced, not run):
# checks the tools, answers --help, makes the build dir if missing, warns
# about sanitizer builds and compiles what the benchmark runs.
#
#   bench_prepare SCRIPT BUILD_DIR BUILDTYPE HELP_LAST_LINE PROGRAM TARGET... -- "$@"
#
# SCRIPT is the calling script ($0), BUILD_DIR the meson build dir, BUILDTYPE
# the buildtype used when the dir has to be made, HELP_LAST_LINE the last
# line of the script's header comment (--help prints lines 2..that), PROGRAM
# the benchmark binary inside the build dir (bench/tunnel-bench) and TARGETs
# what `meson compile` builds. After `--` come the script's own arguments.
bench_prepare() {
  local script=$1 build=$2 buildtype=$3 help_last=$4 program=$5
  shift 5
  local targets=()
  while (($#)) && [[ "$1" != -- ]]; do
    targets+=("$1")
    shift
  done
  shift  # --
  local name
  name=$(basename "$script")

  for tool in meson ninja openssl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "$name: $tool not found; run scripts/setup-deps.sh first" >&2
      exit 1
    fi
  done

  case "${1:-}" in
    -h|--help)
      sed -n "2,${help_last}p" "$script" | sed 's/^# \{0,1\}//'
      echo
      echo "$(basename "$program") options:"
      [[ -x "$build/$program" ]] && exec "$build/$program" --help
      echo "  (build first to see them)"
      exit 0
      ;;
  esac

  if [[ ! -f "$build/build.ninja" ]]; then
    meson setup "$build" --buildtype="$buildtype"
  fi
  if grep -q '"name": "b_sanitize", "value": "[^n]' "$build/meson-info/intro-buildoptions.json" \
      2>/dev/null; then
    echo "$name: $build is a sanitizer build; its figures mean little" >&2
  fi
  meson compile -C "$build" "${targets[@]}" "$program"
}
