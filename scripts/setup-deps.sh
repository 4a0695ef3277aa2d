#!/usr/bin/env bash
# Installs the Debian 12 packages tunneld needs to build, test and run its
# demo. Only missing packages are installed; nothing happens when all are
# present. Uses sudo when not root.
#
#   scripts/setup-deps.sh            # install what is missing
#   scripts/setup-deps.sh --check    # list what is missing, exit 1 if any
set -euo pipefail

PACKAGES=(
  meson ninja-build pkg-config g++
  libuv1-dev
  libprotobuf-dev protobuf-compiler
  libssl-dev libsystemd-dev
  libtomlplusplus-dev libspdlog-dev libfmt-dev
  doctest-dev libcli11-dev nlohmann-json3-dev
  openssl python3 systemd
  scdoc                       # the man pages (packaging/man), built and checked by the packaging suite
  libmosquitto-dev mosquitto # MQTT notify link; the broker only for tests and the demo
  g++-mingw-w64-x86-64-posix  # compile check of the Windows service glue
  util-linux procps           # setpriv, unshare, ps: privilege, journald and token tests
  clang libclang-rt-14-dev    # the sanitizer build and its libFuzzer targets (run-tests.sh)
  clang-tidy                  # the static checks run-tests.sh runs over every source file
  libwebsockets-dev libwebsockets-evlib-uv  # bench/transport-probe only (option (a) of docs/architecture.md)
)

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  "") ;;
  *) echo "setup-deps.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-deps.sh: this script needs Debian 12 (apt-get, dpkg-query);" \
       "install these packages by other means: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
if ((check_only)); then
  echo "setup-deps: missing: ${missing[*]}"
  exit 1
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup-deps.sh: not root and no sudo; as root run:" \
         "apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

echo "setup-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-deps: done"
