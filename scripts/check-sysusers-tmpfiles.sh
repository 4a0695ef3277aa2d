#!/bin/sh
# Applies tunneld's sysusers.d and tmpfiles.d files to an empty root directory
# and checks what an administrator would get from `systemd-sysusers` and
# `systemd-tmpfiles --create`:
#   - a system user and group "tunneld" with no login shell;
#   - /etc/tunneld owned by root:tunneld with the mode the unit also asks for
#     (ConfigurationDirectoryMode=; systemd resets the mode on every start, so
#     the two must agree).
#
#   check-sysusers-tmpfiles.sh SYSUSERS TMPFILES UNIT
#
# The tmpfiles part needs root (it chowns); unprivileged runs check sysusers
# only. Exit 77 (meson: skipped) when systemd-sysusers is not installed.
set -eu

sysusers=$(realpath "$1")
tmpfiles=$(realpath "$2")
unit=$3

if ! command -v systemd-sysusers >/dev/null 2>&1; then
  echo "systemd-sysusers not found: skipping"
  exit 77
fi

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir "$root/etc"

# Both tools resolve file arguments inside --root, hence absolute paths; they
# only warn about malformed lines, so their output is checked as well.
systemd-sysusers --root="$root" "$sysusers" >"$root/sysusers.log" 2>&1 ||
  { cat "$root/sysusers.log"; fail "systemd-sysusers failed"; }
cat "$root/sysusers.log"
if grep -F "$sysusers" "$root/sysusers.log" >/dev/null; then
  fail "systemd-sysusers reported problems in $sysusers"
fi

user=$(grep '^tunneld:' "$root/etc/passwd") || fail "no user tunneld in passwd"
uid=$(echo "$user" | cut -d: -f3)
gid=$(echo "$user" | cut -d: -f4)
shell=$(echo "$user" | cut -d: -f7)
group_gid=$(grep '^tunneld:' "$root/etc/group" | cut -d: -f3) || fail "no group tunneld"
[ "$uid" -lt 1000 ] || fail "tunneld uid $uid is not a system uid"
[ "$gid" = "$group_gid" ] || fail "tunneld's primary group is $gid, not group tunneld ($group_gid)"
case "$shell" in
*/nologin | */false) ;;
*) fail "tunneld has login shell $shell" ;;
esac
echo "sysusers: user tunneld uid=$uid gid=$gid shell=$shell"

unit_mode=$(sed -n 's/^ConfigurationDirectoryMode=//p' "$unit")
tmpfiles_mode=$(awk '$1 == "d" && $2 == "/etc/tunneld" { print $3 }' "$tmpfiles")
[ -n "$tmpfiles_mode" ] || fail "$tmpfiles does not create /etc/tunneld"
[ "$unit_mode" = "$tmpfiles_mode" ] ||
  fail "ConfigurationDirectoryMode=$unit_mode in the unit but $tmpfiles_mode in $tmpfiles"

if [ "$(id -u)" -ne 0 ]; then
  echo "not root: systemd-tmpfiles --create not exercised"
  exit 0
fi
systemd-tmpfiles --root="$root" --create "$tmpfiles" >"$root/tmpfiles.log" 2>&1 ||
  { cat "$root/tmpfiles.log"; fail "systemd-tmpfiles failed"; }
cat "$root/tmpfiles.log"
if [ -s "$root/tmpfiles.log" ]; then
  fail "systemd-tmpfiles reported problems"
fi
got=$(stat -c '%a %u %g' "$root/etc/tunneld")
want="$(echo "$tmpfiles_mode" | sed 's/^0*//') 0 $group_gid"
[ "$got" = "$want" ] || fail "/etc/tunneld is '$got' (mode uid gid), expected '$want'"
echo "tmpfiles: /etc/tunneld $got"
echo "OK"
