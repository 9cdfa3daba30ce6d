#!/usr/bin/env bash
# Makes sure `promtool` (Prometheus's checker of the metrics text format) is installed, for the metrics
# test. Quick and silent when it is there; otherwise installs Debian's `prometheus` package, which needs
# root. The package's own server is never started.
set -euo pipefail

if command -v promtool >/dev/null; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-promtool: promtool is not installed and installing it needs root: run 'sudo apt-get install -y --no-install-recommends prometheus'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-promtool: promtool is not installed and this system has no apt-get: install Prometheus's promtool and put it on PATH" >&2
  exit 1
fi

echo "ensure-promtool: installing prometheus (for promtool)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the package from starting its server on machines where services start on install.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if ! command -v promtool >/dev/null; then
  echo "ensure-promtool: apt-get installed prometheus, yet promtool is not on PATH" >&2
  exit 1
fi
