#!/usr/bin/env bash
# Makes sure Debian's `rclone` and `awscli` are installed, for the test that drives the S3 gateway with
# real command-line clients. That test runs /usr/bin/rclone and /usr/bin/aws by their full paths, so that
# another `aws` earlier on PATH (a user's own install) is never the one tested. Quick and silent when both
# are there; otherwise installs whichever is missing, which needs root.
set -euo pipefail

missing=()
[ -x /usr/bin/rclone ] || missing+=(rclone)
[ -x /usr/bin/aws ] || missing+=(awscli)

if [ "${#missing[@]}" = 0 ]; then exit 0; fi

if [ "$(id -u)" != 0 ]; then
  echo "ensure-s3-tools: ${missing[*]} not installed and installing needs root: run 'sudo apt-get install -y --no-install-recommends ${missing[*]}'" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-s3-tools: ${missing[*]} not installed and this system has no apt-get: install rclone at /usr/bin/rclone and the AWS CLI at /usr/bin/aws" >&2
  exit 1
fi

echo "ensure-s3-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ ! -x /usr/bin/rclone ] || [ ! -x /usr/bin/aws ]; then
  echo "ensure-s3-tools: apt-get installed ${missing[*]}, yet /usr/bin/rclone or /usr/bin/aws does not exist" >&2
  exit 1
fi
