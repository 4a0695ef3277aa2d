#!/bin/sh
# Checks a unit (tunneld.service, tunnel-relay.service) exactly as meson
# configured it for installation.
#
#   check-systemd-unit.sh UNIT EXPECTED_EXECSTART [STAND_IN_BINARY]
#
# 1. No @placeholder@ survived configure_file, ExecStart= is
#    EXPECTED_EXECSTART and, when STAND_IN_BINARY is the built tunneld and
#    INSTALL_PLAN names meson's intro-installed.json, that is exactly where
#    `meson install` puts the binary.
# 2. `systemd-analyze verify` accepts the unit without a single warning about
#    it (verify exits 0 on unknown keys and unparsable values, so its output is
#    checked too). verify insists that ExecStart= exists, so only the path of
#    the ExecStart= binary is swapped for STAND_IN_BINARY (the built tunneld
#    when there is one, else /bin/true); every other line is the installed one.
# 3. The sandbox does not regress: `systemd-analyze security --offline` must
#    rate the unit at or below MAX_EXPOSURE (tunneld.service scores 1.5 today).
#
# Exit 77 (meson: skipped) when systemd-analyze is not installed.
set -eu

MAX_EXPOSURE=20 # in tenths, as --threshold expects: 2.0 "OK"

unit=$1
expected=$2
stand_in=$(realpath "${3:-/bin/true}")

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd-analyze not found: skipping"
  exit 77
fi

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

if grep -n '@[A-Za-z_]*@' "$unit"; then
  fail "$unit: unsubstituted placeholder"
fi

execstart=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$(printf '%s\n' "$execstart" | wc -l)" -eq 1 ] || fail "$unit: expected exactly one ExecStart="
binary=${execstart%% *}
[ "$binary" = "$expected" ] || fail "$unit: ExecStart= runs '$binary', expected '$expected'"
if [ -n "${INSTALL_PLAN:-}" ] && [ -f "$INSTALL_PLAN" ]; then
  installed=$(python3 - "$INSTALL_PLAN" "$stand_in" <<'PY'
import json, os, sys
plan = json.load(open(sys.argv[1]))
built = os.path.realpath(sys.argv[2])
print(next((dest for src, dest in plan.items() if os.path.realpath(src) == built), ""))
PY
  )
  if [ -n "$installed" ]; then
    [ "$installed" = "$binary" ] ||
      fail "meson installs the program as '$installed' but the unit runs '$binary'"
    echo "ExecStart=$binary is where meson installs the program"
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The copy keeps the unit's name: verify derives the unit type and name from it.
copy="$tmp/$(basename "$unit")"
sed "s|^ExecStart=$binary|ExecStart=$stand_in|" "$unit" >"$copy"

# --man=no: a Documentation=man:... page exists only once installed.
status=0
systemd-analyze verify --man=no "$copy" >"$tmp/verify.log" 2>&1 || status=$?
cat "$tmp/verify.log"
[ "$status" -eq 0 ] || fail "systemd-analyze verify exited with $status"
if grep -F "$(basename "$unit")" "$tmp/verify.log" >/dev/null; then
  fail "systemd-analyze verify reported problems in $(basename "$unit")"
fi
echo "systemd-analyze verify: clean"

if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  status=0
  systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" "$copy" >"$tmp/security.log" 2>&1 ||
    status=$?
  grep -v '^✓' "$tmp/security.log" || true
  [ "$status" -eq 0 ] || fail "exposure above $MAX_EXPOSURE/100: a hardening setting was lost"
else
  echo "systemd-analyze security --offline unavailable (systemd < 250): exposure not checked"
fi
echo "OK"
