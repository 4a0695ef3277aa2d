#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time, as a meson test (suite fuzz):
#   run-fuzz-target.sh FUZZ_EXE SEED_DIR WORK_DIR
# The seeds are copied into WORK_DIR/corpus (the source tree is never
# written); findings go to WORK_DIR/ as crash-*, leak-*, timeout-*, oom-*.
# FUZZ_SECONDS (default 10) bounds the run; any finding fails the test.
set -euo pipefail
exe=$1 seeds=$2 work=$3
seconds=${FUZZ_SECONDS:-10}
mkdir -p "$work/corpus"
if [[ -d "$seeds" ]]; then
  cp -r "$seeds/." "$work/corpus/"
fi
# A slow input is a finding (-timeout), so is memory growth (-rss_limit_mb,
# -malloc_limit_mb). Sanitizer options from run-tests.sh still apply. A
# finding exits 1: libFuzzer's own default, 77, means "skipped" to meson.
exec "$exe" -max_total_time="$seconds" -timeout=10 -error_exitcode=1 -timeout_exitcode=1 -rss_limit_mb=2048 -malloc_limit_mb=512 \
  -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus"
