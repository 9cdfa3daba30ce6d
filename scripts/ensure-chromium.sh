#!/usr/bin/env bash
# Makes sure a headless browser is installed for the status page's browser test, which drives
# /usr/bin/chromium. Quick and silent when it is already there; otherwise installs Debian's `chromium`
# package, which needs root.
set -euo pipefail

have() {
  [ -x /usr/bin/chromium ]
}

if have; then exit 0; fi

if [ "$(id -u)" != 0 ]; then
  echo "ensure-chromium: Chromium is not installed and installing it needs root: run 'sudo apt-get install -y chromium'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-chromium: Chromium is not installed and this system has no apt-get: install a Chromium at /usr/bin/chromium" >&2
  exit 1
fi

echo "ensure-chromium: installing Chromium" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Fonts come along as the package's own dependencies; nothing else the desktop would want is needed headless.
apt-get install -y -qq --no-install-recommends chromium >/dev/null
if ! have; then
  echo "ensure-chromium: apt-get installed chromium, yet /usr/bin/chromium does not exist" >&2
  exit 1
fi
