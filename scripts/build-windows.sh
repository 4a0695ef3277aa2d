#!/usr/bin/env bash
# Cross-builds tunneld for Windows (x86_64) with mingw-w64, from Debian's own
# sources: the toolchain is Debian's g++-mingw-w64-x86-64-posix, and every
# library Debian does not ship for mingw (libuv, OpenSSL, protobuf-lite, fmt,
# spdlog, libmosquitto, and the header-only toml++, CLI11, nlohmann-json and
# doctest) is built from Debian's source package of the same version as the
# host's -dev package (`apt-get source`, Debian's patches applied), as static
# libraries, into a prefix outside the repository. A dependency is rebuilt
# only when its Debian version, its recipe in this script, the versions of
# what it depends on or the compiler change (a stamp file in its directory).
#
#   scripts/build-windows.sh                   # dependencies, then the Windows units
#   scripts/build-windows.sh --deps-only       # dependencies only
#   scripts/build-windows.sh --selftest        # ... and run the socket/TLS probe under Wine
#   scripts/build-windows.sh --prefix DIR      # default ${XDG_CACHE_HOME:-~/.cache}/tunneld-win
#   scripts/build-windows.sh --build-dir DIR   # meson build dir (default build-windows)
#   scripts/build-windows.sh --jobs N          # parallel jobs (default: nproc)
#   scripts/build-windows.sh --no-install      # never apt-get: fail if something is missing
#
# Layout of the prefix:
#   deps/<name>-<version>/   one install tree per dependency (include/, lib/, lib/pkgconfig/)
#   deps.ini                 meson machine file with the paths above (read with
#                            packaging/windows/mingw-w64-x86_64.ini, which names the toolchain)
#   src/                     the downloaded source packages (.dsc, tarballs), kept
#   wine/                    the Wine prefix used for --selftest and the tests
#
# Needs root (or sudo) the first time only: it installs the toolchain and
# Wine, and adds a deb-src entry for the suites the machine's Debian entries
# use (/etc/apt/sources.list.d/tunneld-deb-src.sources), then `apt-get update`.
# docs/windows.md explains the choices.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${XDG_CACHE_HOME:-$HOME/.cache}/tunneld-win
build_dir=$root/build-windows
jobs=$(nproc)
deps_only=0
selftest=0
may_install=1

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() {
  echo "build-windows: $*" >&2
  exit 1
}

while (($#)); do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
    --build-dir) build_dir=${2:?--build-dir needs a directory}; shift ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift ;;
    --deps-only) deps_only=1 ;;
    --selftest) selftest=1 ;;
    --no-install) may_install=0 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (try --help)" ;;
  esac
  shift
done
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
case "$build_dir" in /*) ;; *) build_dir=$PWD/$build_dir ;; esac

host=x86_64-w64-mingw32
cc=$host-gcc-posix
cxx=$host-g++-posix
cross_file=$root/packaging/windows/mingw-w64-x86_64.ini
cmake_toolchain=$root/packaging/windows/mingw-w64-x86_64.cmake
# Builds are long and the machine is shared: stay out of the way.
nice=(nice -n 10)

# ---- Host packages ----------------------------------------------------------

HOST_PACKAGES=(
  g++-mingw-w64-x86-64-posix mingw-w64-tools  # the compiler; x86_64-w64-mingw32-pkg-config
  cmake make perl dpkg-dev                    # the dependencies' build systems; dpkg-source
  meson ninja-build pkg-config protobuf-compiler ccache
  wine64                                      # runs what was built: --selftest, the tests
)

SUDO=()
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO=(sudo); fi

install_host_packages() {
  local missing=() p status
  for p in "${HOST_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == installed ]] || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  ((may_install)) || die "missing packages: ${missing[*]} (run without --no-install, as root)"
  echo "build-windows: installing ${missing[*]}"
  "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# deb-src entries for every Debian suite the machine installs from: the
# deb822 stanzas of /etc/apt/sources.list.d/*.sources and the one-line
# entries of /etc/apt/sources.list whose URIs are Debian's, with Types
# deb-src. Third-party repositories are left out: the sources come from
# Debian only.
deb_src_list=/etc/apt/sources.list.d/tunneld-deb-src.sources

write_deb_src_entries() {
  local out
  out=$(
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -e "$f" && "$f" != "$deb_src_list" ]] || continue
      awk 'BEGIN { RS = ""; ORS = "\n\n" }
           /(^|\n)Types:([^\n]* )?deb( |\n|$)/ && /(^|\n)URIs:[^\n]*debian/ && !/(^|\n)Enabled: *no/ {
             sub(/(^|\n)Types:[^\n]*/, "\nTypes: deb-src"); sub(/^\n/, ""); print }' "$f"
    done
    if [[ -f /etc/apt/sources.list ]]; then
      while read -r kind rest; do
        [[ "$kind" == deb && "$rest" == *debian* ]] || continue
        # deb [options] URI suite components...
        read -r -a words <<<"$rest"
        local i=0
        if [[ "${words[0]}" == "["* ]]; then
          while ((i < ${#words[@]})) && [[ "${words[i]}" != *"]" ]]; do i=$((i + 1)); done
          i=$((i + 1))
        fi
        printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n' \
          "${words[$i]}" "${words[$((i + 1))]}" "${words[*]:$((i + 2))}"
      done </etc/apt/sources.list
    fi
  )
  [[ -n "$out" ]] || die "no Debian deb entries found in /etc/apt/sources.list{,.d}: add a deb-src entry by hand"
  if [[ -f "$deb_src_list" ]] && [[ "$(cat "$deb_src_list")" == "$out" ]]; then return 0; fi
  ((may_install)) || die "no deb-src entries; run without --no-install (as root) to add $deb_src_list"
  echo "build-windows: adding deb-src entries ($deb_src_list)"
  printf '%s\n' "$out" | "${SUDO[@]}" tee "$deb_src_list" >/dev/null
  "${SUDO[@]}" apt-get update -qq || die "apt-get update failed"
}

# ---- Versions ---------------------------------------------------------------

# name source-package version-of [headers]
#   version-of: the binary package whose version the source must have;
#   headers: header-only, so when the mirror lacks the source package the
#   same version's -dev package (Debian's build of those headers) will do.
DEPS=(
  "libuv libuv1 libuv1-dev"
  "openssl openssl libssl-dev"
  # protoc on the host generates the code; the runtime must be the same version.
  "protobuf protobuf protobuf-compiler"
  "fmt fmtlib libfmt-dev"
  "spdlog spdlog libspdlog-dev"
  "tomlplusplus tomlplusplus libtomlplusplus-dev headers"
  "cli11 cli11 libcli11-dev headers"
  "nlohmann-json nlohmann-json3 nlohmann-json3-dev headers"
  "doctest doctest doctest-dev headers"
  "mosquitto mosquitto libmosquitto-dev"
)
# What each dependency is built against: its stamp includes their stamps.
declare -A DEP_INPUTS=([spdlog]="fmt" [mosquitto]="openssl")

declare -A SRC VERSION DIR BINARY HEADER_ONLY FROM_DEB

# The version of `binary` that the host has installed, else apt's candidate,
# without a binary-only rebuild suffix (+bN), which has no source of its own.
source_version_of() {
  local binary=$1 v
  v=$(dpkg-query -W -f='${Version}' "$binary" 2>/dev/null || true)
  if [[ -z "$v" ]] || [[ "$binary" != protobuf-compiler ]]; then
    # The candidate: for a library the newest Debian (security) version;
    # protoc instead keeps the installed one, which generates the code.
    v=$(apt-cache policy "$binary" | awk '$1 == "Candidate:" { print $2 }')
  fi
  [[ -n "$v" && "$v" != "(none)" ]] || die "apt knows no version of $binary (apt-get update?)"
  echo "${v%+b[0-9]*}"
}

resolve_versions() {
  local entry name src binary kind
  for entry in "${DEPS[@]}"; do
    read -r name src binary kind <<<"$entry"
    SRC[$name]=$src
    BINARY[$name]=$binary
    HEADER_ONLY[$name]=$([[ "${kind:-}" == headers ]] && echo 1 || echo 0)
    set_version "$name" "$(source_version_of "$binary")"
  done
}

# ---- Fetching and unpacking -------------------------------------------------

set_version() {
  VERSION[$1]=$2
  # An epoch's colon is awkward in paths and pkg-config: 1:1.10.0 -> 1_1.10.0.
  DIR[$1]=$prefix/deps/$1-${2//:/_}
}

dsc_of() { echo "$prefix/src/${SRC[$1]}_${2#*:}.dsc"; }

# Downloads the source package of dependency $1 at VERSION[$1] into
# $prefix/src (kept: a later build needs no network). When a mirror does not
# have that version's files (a security update whose source has not reached
# it yet), falls back to the newest older version apt lists, and says so.
fetch_source() {
  local name=$1 src=${SRC[$1]} wanted=${VERSION[$1]} v log
  mkdir -p "$prefix/src"
  log=$prefix/src/$src.fetch.log
  local candidates=("$wanted")
  while read -r v; do
    dpkg --compare-versions "$v" lt "$wanted" && candidates+=("$v")
  done < <(apt-cache showsrc --only-source "$src" 2>/dev/null |
    awk '$1 == "Version:" { print $2 }' | sort -u -r -V)
  for v in "${candidates[@]}"; do
    if [[ ! -f "$(dsc_of "$name" "$v").fetched" ]]; then
      # --only-source: "doctest" is also a binary of another source package.
      (cd "$prefix/src" && apt-get source --only-source --download-only -q "$src=$v") \
        >"$log" 2>&1 || continue
      touch "$(dsc_of "$name" "$v").fetched"
    fi
    FROM_DEB[$name]=0
    if [[ "$v" != "$wanted" ]]; then
      echo "build-windows: the source of $src $wanted cannot be downloaded; using $v" >&2
      set_version "$name" "$v"
    fi
    return 0
  done
  if ((HEADER_ONLY[$name])); then
    local deb=$prefix/src/${BINARY[$name]}_${wanted#*:}.deb
    if [[ -f "$deb" ]] ||
      (cd "$prefix/src" && apt-get download -q "${BINARY[$name]}=$wanted" >"$log" 2>&1 &&
        mv "${BINARY[$name]}_"*"${wanted#*:}"*.deb "$deb"); then
      echo "build-windows: the source of $src $wanted cannot be downloaded; using the headers" \
        "of Debian's ${BINARY[$name]} $wanted" >&2
      FROM_DEB[$name]=1
      return 0
    fi
  fi
  grep -E '^(E|W):' "$log" | grep -v unsandboxed >&2 || true
  die "apt-get source $src=$wanted failed (is a deb-src entry configured? see above)"
}

# Unpacks the downloaded source package of dependency $1, with Debian's
# patches applied, into a fresh directory and prints its path.
unpack_source() {
  local name=$1 work=$prefix/work/$1 dsc
  rm -rf "$work"
  mkdir -p "$prefix/work"
  if ((FROM_DEB[$name])); then
    # Laid out like the source tree where the recipe looks: include/.
    local deb=$prefix/src/${BINARY[$name]}_${VERSION[$name]#*:}.deb
    if ! dpkg-deb -x "$deb" "$work.deb"; then die "dpkg-deb -x $deb failed"; fi
    mkdir -p "$work"
    mv "$work.deb/usr/include" "$work/include"
    rm -rf "$work.deb"
  else
    dsc=$(dsc_of "$name" "${VERSION[$name]}")
    dpkg-source --no-check -x "$dsc" "$work" >/dev/null || die "dpkg-source -x $dsc failed"
  fi
  echo "$work"
}

# ---- Recipes ----------------------------------------------------------------
# Each build_<name> gets the unpacked source in $1 and installs into $2.

cmake_build() {
  local source=$1 out=$2 build=$1/_build
  shift 2
  "${nice[@]}" cmake -S "$source" -B "$build" -G Ninja \
    -DCMAKE_TOOLCHAIN_FILE="$cmake_toolchain" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$out" -DCMAKE_INSTALL_LIBDIR=lib -DBUILD_SHARED_LIBS=OFF \
    "$@" >"$build.log" 2>&1 || { tail -30 "$build.log"; return 1; }
}

cmake_install() {
  local build=$1/_build
  shift
  "${nice[@]}" cmake --build "$build" -j "$jobs" "$@" >>"$build.log" 2>&1 ||
    { tail -30 "$build.log"; return 1; }
}

# pkg-config file: write_pc DIR NAME VERSION CFLAGS LIBS [LIBS_PRIVATE] [REQUIRES]
write_pc() {
  mkdir -p "$1/lib/pkgconfig"
  cat >"$1/lib/pkgconfig/$2.pc" <<EOF
prefix=$1
includedir=\${prefix}/include
libdir=\${prefix}/lib

Name: $2
Description: $2 for Windows (x86_64, static), built by tunneld's build-windows.sh
Version: $3
Requires: ${7:-}
Cflags: -I\${includedir}${4:+ $4}
Libs: ${5:-}
Libs.private: ${6:-}
EOF
}

build_libuv() {
  cmake_build "$1" "$2" -DLIBUV_BUILD_TESTS=OFF -DLIBUV_BUILD_BENCH=OFF
  cmake_install "$1" --target uv_a
  mkdir -p "$2/include" "$2/lib"
  cp -r "$1/include/." "$2/include/"
  cp "$1/_build/libuv_a.a" "$2/lib/libuv.a"
  # libuv's own Windows imports (its CMakeLists.txt, uv_libraries).
  write_pc "$2" libuv "${VERSION[libuv]%%-*}" "" "-L\${libdir} -luv" \
    "-lpsapi -luser32 -ladvapi32 -liphlpapi -luserenv -lws2_32 -ldbghelp -lole32 -lshell32"
}

build_openssl() {
  # Configure target mingw64; only the libraries (no apps, no tests, no docs).
  # Static only: a user copies the .exe files and nothing else.
  (cd "$1" && "${nice[@]}" env CC="$cc" CXX="$cxx" AR=$host-ar RANLIB=$host-ranlib RC=$host-windres \
    ./Configure mingw64 no-shared no-tests no-module \
    --prefix="$2" --libdir=lib --openssldir="C:/ProgramData/tunneld/ssl" >"$1/_build.log" 2>&1) ||
    { tail -30 "$1/_build.log"; return 1; }
  (cd "$1" && "${nice[@]}" make -j "$jobs" build_libs >>"$1/_build.log" 2>&1 &&
    make install_dev >>"$1/_build.log" 2>&1) || { tail -30 "$1/_build.log"; return 1; }
}

build_protobuf() {
  # Only the lite runtime: tunneld's .proto files say optimize_for = LITE_RUNTIME,
  # and protoc comes from the host (same version).
  cmake_build "$1" "$2" -Dprotobuf_BUILD_TESTS=OFF -Dprotobuf_BUILD_PROTOC_BINARIES=OFF \
    -Dprotobuf_BUILD_CONFORMANCE=OFF -Dprotobuf_BUILD_EXAMPLES=OFF -Dprotobuf_WITH_ZLIB=OFF \
    -Dprotobuf_BUILD_SHARED_LIBS=OFF -Dprotobuf_MSVC_STATIC_RUNTIME=OFF
  cmake_install "$1" --target libprotobuf-lite
  mkdir -p "$2/include" "$2/lib"
  (cd "$1/src" && find google -name '*.h' -o -name '*.inc' | grep -v -e /testing/ -e _test \
    | tar -cf - -T - | tar -xf - -C "$2/include")
  cp "$1/_build/libprotobuf-lite.a" "$2/lib/"
  write_pc "$2" protobuf-lite "${VERSION[protobuf]%%-*}" "" "-L\${libdir} -lprotobuf-lite"
}

build_fmt() {
  cmake_build "$1" "$2" -DFMT_TEST=OFF -DFMT_DOC=OFF -DFMT_INSTALL=ON
  cmake_install "$1" --target install
}

build_spdlog() {
  # A compiled library using the external fmt, as Debian builds it.
  cmake_build "$1" "$2" -DSPDLOG_FMT_EXTERNAL=ON -DSPDLOG_BUILD_SHARED=OFF \
    -DSPDLOG_BUILD_EXAMPLE=OFF -DSPDLOG_BUILD_TESTS=OFF -DSPDLOG_BUILD_BENCH=OFF \
    -DCMAKE_FIND_ROOT_PATH="${DIR[fmt]}"
  cmake_install "$1" --target install
}

build_tomlplusplus() {
  # Header-only here (TOML_HEADER_ONLY defaults to 1): Debian's compiled
  # library is one translation unit of these same headers.
  mkdir -p "$2/include"
  cp -r "$1/include/toml++" "$2/include/"
  write_pc "$2" tomlplusplus "${VERSION[tomlplusplus]%%+*}" "" ""
}

build_cli11() {
  mkdir -p "$2/include"
  cp -r "$1/include/CLI" "$2/include/"
  write_pc "$2" CLI11 "${VERSION[cli11]%%+*}" "" ""
}

build_nlohmann-json() {
  mkdir -p "$2/include"
  cp -r "$1/include/nlohmann" "$2/include/"
  write_pc "$2" nlohmann_json "${VERSION[nlohmann-json]%%-*}" "" ""
}

build_doctest() {
  mkdir -p "$2/include/doctest"
  if [[ -f "$1/doctest/doctest.h" ]]; then
    cp "$1/doctest/doctest.h" "$2/include/doctest/"
  else
    cp "$1/include/doctest/doctest.h" "$2/include/doctest/"
  fi
  write_pc "$2" doctest "${VERSION[doctest]%%~*}" "" ""
}

build_mosquitto() {
  # The client library only, with TLS, without its threaded mode: tunneld
  # drives it from its own loop.
  cmake_build "$1" "$2" -DWITH_BROKER=OFF -DWITH_APPS=OFF -DWITH_CLIENTS=OFF \
    -DWITH_PLUGINS=OFF -DDOCUMENTATION=OFF -DWITH_LIB_CPP=OFF -DWITH_CJSON=OFF \
    -DWITH_STATIC_LIBRARIES=ON -DWITH_PIC=OFF -DWITH_THREADING=OFF -DWITH_TLS=ON \
    -DCMAKE_FIND_ROOT_PATH="${DIR[openssl]}" -DOPENSSL_USE_STATIC_LIBS=ON
  cmake_install "$1" --target libmosquitto_static
  mkdir -p "$2/include" "$2/lib"
  cp "$1/include/mosquitto.h" "$1/include/mqtt_protocol.h" "$2/include/"
  cp "$(find "$1/_build" -name 'libmosquitto_static.a' | head -1)" "$2/lib/libmosquitto.a"
  # LIBMOSQUITTO_STATIC: mosquitto.h declares no dllimport then.
  write_pc "$2" libmosquitto "${VERSION[mosquitto]%%-*}" "-DLIBMOSQUITTO_STATIC" \
    "-L\${libdir} -lmosquitto" "-lws2_32" "openssl"
}

# ---- Driving ----------------------------------------------------------------

compiler_id() { "$cxx" --version | head -1; }

# What a build depends on: the Debian version, the recipe, the inputs'
# stamps, the compiler and the toolchain files.
stamp_of() {
  local name=$1 input
  {
    echo "version=${VERSION[$name]}"
    if [[ "${FROM_DEB[$name]:-0}" == 1 ]]; then echo "from=${BINARY[$name]}"; fi
    echo "compiler=$(compiler_id)"
    declare -f "build_$name" cmake_build cmake_install write_pc | sha256sum
    sha256sum <"$cmake_toolchain"
    for input in ${DEP_INPUTS[$name]:-}; do
      echo "input=$input"
      cat "${DIR[$input]}/.stamp"
    done
  }
}

built=()
reused=()

reusable() {
  local out=${DIR[$1]}
  [[ -f "$out/.stamp" ]] && [[ "$(cat "$out/.stamp")" == "$(stamp_of "$1")" ]]
}

build_dep() {
  local name=$1 work started
  if reusable "$name"; then
    reused+=("$name")
    return 0
  fi
  fetch_source "$name"
  if reusable "$name"; then # a fallback version built before
    reused+=("$name")
    return 0
  fi
  started=$SECONDS
  printf 'build-windows: building %-14s %s ... ' "$name" "${VERSION[$name]}"
  work=$(unpack_source "$name")
  local out=${DIR[$name]}
  rm -rf "$out"
  mkdir -p "$out"
  # A subshell with errexit of its own: a function called as an if
  # condition would run with errexit off, and a failing step would go unseen.
  local rc=0
  set +e
  (
    set -e
    "build_$name" "$work" "$out"
  )
  rc=$?
  set -e
  if ((rc != 0)); then
    echo "FAILED"
    die "building $name failed; the sources and the log are in $work"
  fi
  stamp_of "$name" >"$out/.stamp"
  rm -rf "$work"
  echo "done in $((SECONDS - started)) s"
  built+=("$name")
}

write_machine_file() {
  local name dirs=()
  for entry in "${DEPS[@]}"; do
    read -r name _ <<<"$entry"
    dirs+=("'${DIR[$name]}/lib/pkgconfig'")
  done
  local IFS=,
  cat >"$prefix/deps.ini.tmp" <<EOF
# Written by scripts/build-windows.sh: where the Windows dependencies are.
# Use it before the repository's cross file:
#   meson setup --cross-file $prefix/deps.ini --cross-file packaging/windows/mingw-w64-x86_64.ini ...
[constants]
deps_pkg_config_libdir = [${dirs[*]}]
wine_wrapper = '$root/scripts/wine-run.sh'
EOF
  mv "$prefix/deps.ini.tmp" "$prefix/deps.ini"
}

print_versions() {
  local entry name src
  echo "build-windows: dependencies (Debian source package and version; prefix $prefix/deps)"
  for entry in "${DEPS[@]}"; do
    read -r name src _ <<<"$entry"
    printf '  %-14s %-16s %s%s\n' "$name" "$src" "${VERSION[$name]}" \
      "$([[ "${FROM_DEB[$name]:-0}" == 1 ]] && echo " (headers of ${BINARY[$name]})")"
  done
  printf '  %-14s %-16s %s\n' toolchain gcc-mingw-w64 "$(dpkg-query -W -f='${Version}' g++-mingw-w64-x86-64-posix)"
}

install_host_packages
write_deb_src_entries
resolve_versions

deps_started=$SECONDS
for entry in "${DEPS[@]}"; do
  read -r name _ <<<"$entry"
  build_dep "$name"
done
write_machine_file
print_versions
echo "build-windows: dependencies ready in $((SECONDS - deps_started)) s" \
  "(built: ${built[*]:-none}; reused: ${reused[*]:-none})"
((deps_only)) && exit 0

setup_args=(--cross-file "$prefix/deps.ini" --cross-file "$cross_file" --buildtype=release)
meson_setup() {
  local src=$1 dir=$2
  if [[ -f "$dir/build.ninja" ]]; then
    meson setup --reconfigure "$dir" "$src" "${setup_args[@]}" >"$dir.setup.log" 2>&1
  else
    meson setup "$dir" "$src" "${setup_args[@]}" >"$dir.setup.log" 2>&1
  fi || { tail -40 "$dir.setup.log"; die "meson setup of $src failed"; }
}

# The Windows platform units, the prefix check and the socket/TLS probe
# (packaging/windows/check).
check_build=$build_dir/check
mkdir -p "$build_dir"
meson_setup "$root/packaging/windows/check" "$check_build"
echo "build-windows: compiling the Windows units ($check_build)"
"${nice[@]}" meson compile -C "$check_build" -j "$jobs" >"$check_build.compile.log" 2>&1 ||
  { tail -40 "$check_build.compile.log"; die "compiling the Windows units failed"; }

if ((selftest)); then
  export WINEPREFIX=${WINEPREFIX:-$prefix/wine}
  # The Wine server outlives the programs it runs; stop it when done.
  trap 'wineserver -k >/dev/null 2>&1 || true' EXIT
  echo "build-windows: selftest under Wine (WINEPREFIX=$WINEPREFIX; the first start takes ~20 s)"
  meson test -C "$check_build" --print-errorlogs --timeout-multiplier 4 ||
    die "selftest failed (logs in $check_build/meson-logs/testlog.txt)"
  # The figures: 64 MiB each way, both socket designs.
  "$root/scripts/wine-run.sh" "$check_build/socket-probe.exe" --mib 64 ||
    die "socket-probe failed under Wine"
fi
