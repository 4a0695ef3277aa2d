#!/usr/bin/env bash
# Builds the Debian packages tunneld, tunneld-localproxy and tunnel-relay from
# this source tree, for amd64 (native) or arm64 (cross-built with Debian
# multiarch), and checks them with lintian. Works on a fresh Debian 12
# machine: installs what it needs with apt-get (only what is missing; through
# sudo when not root). docs/install.md explains the packages.
#
#   scripts/build-deb.sh                    # amd64 (the machine's architecture)
#   scripts/build-deb.sh --arch arm64       # cross build for arm64
#   scripts/build-deb.sh --version 0.1.0-2  # another Debian version (a rebuild:
#                                           # adds a changelog entry to the copy)
#   scripts/build-deb.sh --out DIR          # where the .deb files go
#                                           # (default build-deb/ARCH)
#
# The tree is copied (the files git knows, committed or not) to
# build-deb/src/tunneld (src-arm64/ for arm64) and built there with
# dpkg-buildpackage -b, so the work tree stays clean. The amd64 build runs
# the unit tests and the packaging checks (seconds); the arm64 build cannot
# run arm64 programs, so it builds with the nocheck profile:
# scripts/arm64-check.sh runs the arm64 tests under qemu. lintian must
# report no error and no warning (debian/*.lintian-overrides give the
# reasons for what is overridden).
#
# Environment: JOBS (parallel jobs, default: all cores), NICE (niceness of
# the build; default 5, 10 for the CPU-heavier cross build).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
REPO=$PWD

host_arch=$(dpkg --print-architecture 2>/dev/null || echo unknown)
arch=$host_arch
version=""
out=""
while (($#)); do
  case $1 in
    --arch) arch=${2:?--arch needs amd64 or arm64}; shift ;;
    --version) version=${2:?--version needs a Debian version}; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case $arch in
  amd64 | arm64) ;;
  *) echo "build-deb.sh: --arch must be amd64 or arm64, not '$arch'" >&2; exit 2 ;;
esac
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "build-deb.sh: needs Debian 12 (apt-get, dpkg)" >&2
  exit 1
fi
[[ $host_arch == amd64 ]] || { echo "build-deb.sh: runs on amd64 machines (this one is $host_arch)" >&2; exit 1; }
out=${out:-build-deb/$arch}

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "build-deb.sh: not root and no sudo" >&2; exit 1; }
  SUDO=(sudo)
fi
apt_install() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}
missing() { # the packages of "$@" that are not installed
  local p
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || echo "$p"
  done
}

t0=$SECONDS
# ------------------------------------------------------------ tools
tools=(dpkg-dev debhelper lintian git)
profile=""
build_opts=()
if [[ $arch != "$host_arch" ]]; then
  # Multiarch: arm64 packages (the -dev libraries) install beside the amd64
  # ones; crossbuild-essential-arm64 brings the aarch64-linux-gnu compilers.
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    echo "build-deb: dpkg --add-architecture $arch"
    "${SUDO[@]}" dpkg --add-architecture "$arch"
    "${SUDO[@]}" apt-get update -qq
  fi
  tools+=("crossbuild-essential-$arch")
  profile=nocheck
  build_opts=(nocheck)
fi
need=$(missing "${tools[@]}")
if [[ -n $need ]]; then
  echo "build-deb: installing $need"
  "${SUDO[@]}" apt-get update -qq
  # shellcheck disable=SC2086 # one package per word
  apt_install $need >/dev/null
fi
# The Build-Depends of debian/control, resolved for the target architecture
# (for arm64: the :arm64 -dev packages, the native protoc, meson, scdoc).
echo "build-deb: build dependencies for $arch"
if ! dpkg-checkbuilddeps -a "$arch" ${profile:+-P "$profile"} debian/control 2>/dev/null; then
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q --no-install-recommends \
    -a "$arch" ${profile:+-P "$profile"} "$REPO" >/dev/null
fi

# ------------------------------------------------------------ source copy
# A fixed path per architecture (build-deb/src for the native one), so that
# ccache (if any) finds the objects of the last build (the path is part of
# the compiler flags), and the two architectures can build at the same time.
top=build-deb/src
[[ $arch == "$host_arch" ]] || top=build-deb/src-$arch
src=$top/tunneld
rm -rf "$src" "$top/"*.deb "$top/"*.changes "$top/"*.buildinfo
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard |
    grep -z -v -E '^(build[^/]*)/' | xargs -0 -r tar -cf - --no-recursion -- 2>/dev/null | tar -C "$src" -xf -
else
  tar -cf - --exclude='./build*' --exclude=./.git . | tar -C "$src" -xf -
fi
if [[ -n $version ]]; then
  # A new changelog entry on the copy: the same code under another version
  # (a rebuild, as for an upgrade test).
  {
    echo "tunneld ($version) bookworm; urgency=medium"
    echo
    echo "  * Rebuild as $version."
    echo
    echo " -- $(sed -n 's/^ -- \(.*>\)  .*/\1/p' debian/changelog | head -1)  $(date -R)"
    echo
    cat debian/changelog
  } >"$src/debian/changelog"
fi
deb_version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)

# ------------------------------------------------------------ build
echo "build-deb: dpkg-buildpackage -b -a $arch (tunneld $deb_version)"
if [[ -d /usr/lib/ccache ]]; then export PATH=/usr/lib/ccache:$PATH; fi
export DEB_BUILD_OPTIONS="${build_opts[*]} parallel=${JOBS:-$(nproc)} ${DEB_BUILD_OPTIONS:-}"
# The project's meson cross file; debhelper passes it to meson setup.
[[ $arch == arm64 ]] && export DH_MESON_CROSS_FILE=$REPO/packaging/cross/arm64-linux-gnu.ini
log=$REPO/build-deb/build-$arch.log
if ! (cd "$src" && nice -n "${NICE:-$([[ $arch == "$host_arch" ]] && echo 5 || echo 10)}" dpkg-buildpackage -b -us -uc -a "$arch" ${profile:+-P"$profile"}) >"$log" 2>&1; then
  tail -40 "$log"
  echo "build-deb: dpkg-buildpackage failed (log: $log)" >&2
  exit 1
fi
changes=$top/tunneld_${deb_version#*:}_$arch.changes

# ------------------------------------------------------------ lintian
echo "build-deb: lintian"
lintian_rc=0
lintian --fail-on error,warning --display-info "$changes" >"build-deb/lintian-$arch.log" 2>&1 || lintian_rc=$?
sed 's/^/    /' "build-deb/lintian-$arch.log"
if ((lintian_rc)); then
  echo "build-deb: lintian reported errors or warnings (exit $lintian_rc)" >&2
  exit 1
fi
echo "    (lintian: no error, no warning)"

mkdir -p "$out"
rm -f "$out"/*.deb
sed -n '/^Files:/,$ s/^ [0-9a-f]* [0-9]* [^ ]* [^ ]* \(.*\.deb\)$/\1/p' "$changes" | while read -r f; do
  mv "$top/$f" "$out/"
done
echo "build-deb: $arch packages in $out ($((SECONDS - t0)) s):"
for f in "$out"/*.deb; do
  printf '    %-48s %6s KiB (installed %s KiB)\n' "$(basename "$f")" "$(($(stat -c %s "$f") / 1024))" \
    "$(dpkg-deb -f "$f" Installed-Size)"
done
