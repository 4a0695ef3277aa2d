#!/bin/sh
# Compile check of the Win32-only sources with mingw-w64 (Debian package
# g++-mingw-w64-x86-64-posix; the posix thread model provides std::mutex).
# Debian has no mingw builds of libuv, lws, OpenSSL or spdlog, so only code
# that needs nothing but the Windows API is checked here. The objects are also
# linked into a throwaway program so that a missing import library shows up.
#
#   check-mingw.sh [SOURCE_ROOT]
#
# Exit 77 (meson: skipped) when the cross compiler is not installed.
set -eu

root=${1:-$(dirname "$0")/..}
cxx=${MINGW_CXX:-x86_64-w64-mingw32-g++-posix}

if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "$cxx not found (apt-get install g++-mingw-w64-x86-64-posix): skipping"
  exit 77
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags="-std=c++20 -Wall -Wextra -Wpedantic -Werror"
dir="$root/packaging/windows-service"

objects=""
for source in win_service.cpp win_pipe.cpp; do
  echo "$cxx -c $dir/$source"
  # shellcheck disable=SC2086 # $flags is a list of words
  "$cxx" $flags -c "$dir/$source" -o "$out/${source%.cpp}.o"
  objects="$objects $out/${source%.cpp}.o"
done

cat >"$out/link_check.cpp" <<'CPP'
#include "win_pipe.h"
#include "win_service.h"

int wmain() {
  tunneld::windows::PipeSecurity security;
  DWORD error = 0;
  HANDLE pipe = tunneld::windows::create_control_pipe(tunneld::windows::kControlPipePath,
                                                      security, true, &error);
  if (pipe != INVALID_HANDLE_VALUE) CloseHandle(pipe);
  return tunneld::windows::run_windows_service(L"tunneld", [] { return 0; }, [] {});
}
CPP
# shellcheck disable=SC2086
"$cxx" $flags -municode -I"$dir" "$out/link_check.cpp" $objects -ladvapi32 -static \
  -o "$out/link_check.exe"
echo "OK: Windows service sources compile and link"
