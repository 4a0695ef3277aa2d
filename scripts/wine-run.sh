#!/bin/sh
# Runs a Windows program under Wine with a private, quiet prefix: the
# exe_wrapper of the Windows cross build (packaging/windows/mingw-w64-x86_64.ini)
# and the way scripts run the cross-built programs.
#
#   scripts/wine-run.sh PROGRAM.exe [ARGS...]
#
# WINEPREFIX defaults to ${XDG_CACHE_HOME:-~/.cache}/tunneld-win/wine (created
# on first use, which takes about 20 s). Stop its wineserver with
#   WINEPREFIX=... wineserver -k
set -eu
: "${WINEPREFIX:=${XDG_CACHE_HOME:-$HOME/.cache}/tunneld-win/wine}"
export WINEPREFIX
export WINEDEBUG="${WINEDEBUG:--all}"
# No Mono or Gecko installer prompts, no desktop menu entries.
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=;winemenubuilder.exe=d}"
loader=/usr/lib/wine/wine64
[ -x "$loader" ] || loader=$(command -v wine64 || command -v wine || true)
if [ -z "$loader" ]; then
  echo "wine-run: Wine is not installed (apt-get install wine64)" >&2
  exit 77
fi
mkdir -p "$WINEPREFIX"
exec "$loader" "$@"
