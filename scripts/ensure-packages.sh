#!/usr/bin/env bash
# Makes sure Debian packages that the tests drive are installed: each argument is PACKAGE=FILE, and the
# package is installed when FILE (a shell pattern) matches nothing. Quick and silent when every file is
# there; otherwise installs the missing packages with apt-get, which needs root. A package's own services
# are not started on install.
#   scripts/ensure-packages.sh chromium=/usr/bin/chromium prometheus=/usr/bin/promtool
set -euo pipefail

present() {
  compgen -G "$1" >/dev/null
}

missing=()
for pair in "$@"; do
  present "${pair#*=}" || missing+=("${pair%%=*}")
done
if [ "${#missing[@]}" = 0 ]; then exit 0; fi

if [ "$(id -u)" != 0 ]; then
  echo "ensure-packages: ${missing[*]} not installed and installing needs root: run 'sudo apt-get install -y --no-install-recommends ${missing[*]}'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-packages: ${missing[*]} not installed and this system has no apt-get: install them by other means" >&2
  exit 1
fi

echo "ensure-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for pair in "$@"; do
  if ! present "${pair#*=}"; then
    echo "ensure-packages: apt-get installed ${pair%%=*}, yet nothing matches ${pair#*=}" >&2
    exit 1
  fi
done
