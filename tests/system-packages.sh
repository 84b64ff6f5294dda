#!/bin/sh
# Install the system packages the tests need (tests/system-packages.txt, or the file given) that are missing.
# Debian/Ubuntu (apt-get); as root or through sudo. Nothing to do, nothing contacted. Exit 1 when it cannot.
set -eu
list=${1:-$(dirname "$0")/system-packages.txt}
missing=""
while read -r command package _rest; do
  case $command in '' | '#'*) continue ;; esac
  command -v "$command" >/dev/null 2>&1 || [ -x "/usr/bin/$command" ] || missing="$missing $package"
done <"$list"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages: the tests need these packages (no apt-get here, install them yourself):$missing" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then as_root=""; else as_root="sudo"; fi
echo "system-packages: installing what the tests need:$missing" >&2
# shellcheck disable=SC2086 # $missing is a list of package names
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
