#!/bin/sh
# check-debian-version.sh CHANGELOG VERSION: the newest entry of
# debian/changelog must be VERSION-N (VERSION: the project version in
# meson.build), so a release that bumps one and forgets the other fails the
# `packaging` suite instead of shipping a package named after the old
# version. docs/install.md describes the scheme. Exit 77 (skipped) in a
# tree without debian/.
set -eu
[ -f "$1" ] || { echo "no $1: skipping"; exit 77; }
v=$(sed -n '1s/^tunneld (\([^)]*\)).*/\1/p' "$1")
case $v in
  "$2"-[1-9]*) echo "debian/changelog: $v, meson.build: $2" ;;
  *)
    echo "debian/changelog starts with version '$v', expected $2-N (the version in meson.build):" \
      "add an entry for $2-1 to debian/changelog" >&2
    exit 1 ;;
esac
