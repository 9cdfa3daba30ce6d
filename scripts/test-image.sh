#!/usr/bin/env bash
# Builds the container image from the Dockerfile and runs the cluster of compose.yaml with it: writes
# a file through the client, reads it back, kills a storage node holding part of it and reads it
# again, comparing SHA-256 each time. Everything it starts is removed at the end, pass or fail.
#
# Needs root on Debian 12 with Node 20. Installs podman, runc, docker-compose and debootstrap when
# missing, and needs no image registry: debian:bookworm-slim is made from Debian's mirror and
# node:20-bookworm-slim from this machine's own Node 20 and npm. The images stay for the next run
# unless --remove-images is given.
#   npm run test:image
#   npm run test:image -- --remove-images
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=dfs-image-test
# Podman's images, containers and volumes for this test live apart from any other use of Podman on
# the machine, so that cleaning up, images included, touches nothing else.
STORE=/var/lib/dfs-image-test
RUNROOT=/run/dfs-image-test
PACKAGES=(podman runc crun conmon netavark aardvark-dns iptables uidmap fuse-overlayfs slirp4netns docker-compose debootstrap)
DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
NODE_IMAGE=docker.io/library/node:20-bookworm-slim
DFS_IMAGE=localhost/dfs:latest
FILE=/image-test/blob.bin
FILE_SIZE=$((6 * 1024 * 1024 + 12345)) # not a multiple of the chunk size, so the last chunk is short
NODES="lock storage1 storage2 storage3"
# Ceilings on single commands, so that a hung build or client fails the run instead of stalling it.
BUILD_TIMEOUT=900
COMPOSE_TIMEOUT=180

remove_images=0
for arg in "$@"; do
  case "$arg" in
    --remove-images) remove_images=1 ;;
    *) echo "test-image: unknown argument '$arg' (known: --remove-images)" >&2; exit 2 ;;
  esac
done

started=$SECONDS
step="starting"
failure=""
interrupted=""
last_seen="" # what the last check of a wait saw, for its failure message
work=""
service_pid=""
compose_pid=""

say() {
  step="$*"
  printf 'test-image [%3ds] %s\n' $((SECONDS - started)) "$*"
}

fail() {
  failure="$*"
  exit 1
}

# Runs a command with its output in the log, which is shown when the run fails.
quiet() {
  "$@" >>"$work/log" 2>&1
}

# Ctrl-C and SIGTERM only set a flag, acted on here: exiting from inside the trap, which may
# interrupt a wait, would run the teardown there, and its own waits would hang.
stop_if_interrupted() {
  [ -z "$interrupted" ] || exit 130
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND once a second until it succeeds.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  last_seen=""
  until "$@"; do
    stop_if_interrupted
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not reached within ${limit}s${last_seen:+ (last seen: $last_seen)}"
    sleep 1
    stop_if_interrupted
  done
}

ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  say "installing ${missing[*]}"
  command -v apt-get >/dev/null || fail "missing ${missing[*]}, and this system has no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # Waits for another apt or dpkg run to finish rather than failing at once.
  local wait_lock=(-o DPkg::Lock::Timeout=300)
  quiet apt-get "${wait_lock[@]}" update -qq
  # Without --no-install-recommends docker.io comes along, whose daemon is not wanted here.
  quiet apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends "${missing[@]}"
}

configure_engine() {
  # runc rather than crun: crun 1.8 refuses hosts whose cgroups are in hybrid (v1 and v2) mode.
  # Fixed limits: raising the open-file limit to podman's default fails where root lacks
  # CAP_SYS_RESOURCE, as in some sandboxed CI machines. netavark named, as Debian's podman also
  # ships a CNI configuration whose plugins are not installed.
  cat >"$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[network]
network_backend = "netavark"

[engine]
runtime = "runc"
tmp_dir = "$RUNROOT/libpod"
EOF
  cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$STORE/storage"
runroot = "$RUNROOT/storage"
EOF
  export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"
}

debian_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

build_debian_image() {
  podman image exists "$DEBIAN_IMAGE" 2>>"$work/log" && return 0
  local mirror
  mirror=$(debian_mirror)
  say "making $DEBIAN_IMAGE from $mirror"
  quiet timeout --foreground "$BUILD_TIMEOUT" debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" ||
    fail "debootstrap of bookworm from $mirror failed"
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | quiet podman import --change 'CMD ["bash"]' - "$DEBIAN_IMAGE"
  rm -rf "$work/rootfs"
}

build_node_image() {
  podman image exists "$NODE_IMAGE" 2>>"$work/log" && return 0
  local node npm ctx="$work/node-image"
  node=$(command -v node) || fail "node is not on the PATH"
  [[ "$(node --version)" == v20.* ]] || fail "node $(node --version) found; node 20 is needed to stand in for $NODE_IMAGE"
  npm="$(npm root -g)/npm"
  [ -f "$npm/bin/npm-cli.js" ] || fail "npm's own package not found at $npm"
  say "making $NODE_IMAGE from node $(node --version) and npm $(npm --version)"
  mkdir -p "$ctx"
  cp "$(readlink -f "$node")" "$ctx/node"
  cp -a "$npm" "$ctx/npm"
  # The machine's CA bundle: a registry reached through a TLS-inspecting proxy is trusted inside
  # the build exactly as it is outside.
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  cat >"$ctx/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm_config_cafile=/etc/ssl/certs/ca-certificates.crt
CMD ["node"]
EOF
  quiet timeout --foreground "$BUILD_TIMEOUT" podman build -t "$NODE_IMAGE" -f "$ctx/Containerfile" "$ctx"
  rm -rf "$ctx"
}

build_dfs_image() {
  say "building the dfs image from the Dockerfile"
  quiet timeout --foreground "$BUILD_TIMEOUT" podman build -t "$DFS_IMAGE" .
  local version
  version=$(podman run --rm "$DFS_IMAGE" --version 2>>"$work/log") || fail "the image's dfs --version failed"
  say "image built: dfs $version"
}

start_service() {
  local sock="$work/podman.sock"
  # In a session of its own, so that Ctrl-C leaves it to the teardown, which needs it; setsid execs
  # podman in place, so $! is podman's own PID and stopping it stops the service.
  setsid podman system service --time=0 "unix://$sock" >>"$work/log" 2>&1 3>&- 4>&- &
  service_pid=$!
  export DOCKER_HOST="unix://$sock"
  wait_until 30 "podman's API socket" podman --url "$DOCKER_HOST" version >/dev/null 2>&1
}

compose() {
  # Run in the background and waited for: while a foreground program that catches SIGINT itself
  # (docker-compose does) runs, bash drops a Ctrl-C; a wait is cut short by it instead.
  timeout --foreground "$COMPOSE_TIMEOUT" docker-compose --project-name "$PROJECT" --file compose.yaml "$@" <&0 &
  compose_pid=$!
  local rc=0
  wait "$compose_pid" || rc=$?
  stop_if_interrupted
  compose_pid=""
  return "$rc"
}

client() {
  compose run --rm -T client "$@" 2>>"$work/log"
}

# Prints "NAME=STATE" for every node in status --json, NAME being the host of its URL.
# shellcheck disable=SC2016 # JavaScript in single quotes
node_states() {
  client status --json </dev/null | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      for (const n of JSON.parse(s).nodes) console.log(`${new URL(n.url).hostname}=${n.state}`);
    });'
}

all_nodes_up() {
  local states n
  states=$(node_states) || { last_seen="client status failed"; return 1; }
  last_seen=${states//$'\n'/ }
  for n in $NODES; do grep -qx "$n=up" <<<"$states" || return 1; done
}

node_not_up() {
  local states
  states=$(node_states) || { last_seen="client status failed"; return 1; }
  last_seen=${states//$'\n'/ }
  ! grep -qx "$1=up" <<<"$states"
}

start_cluster() {
  say "removing leftovers of an earlier run"
  quiet compose down --volumes --remove-orphans --timeout 5
  say "starting the cluster (compose up)"
  quiet compose up -d
  say "waiting for $NODES to be up"
  wait_until 120 "every node up in status" all_nodes_up
}

check_read() {
  local want=$1 got
  client read "$FILE" - </dev/null >"$work/out.bin" || fail "reading $FILE back $2 failed"
  got=$(sha256sum <"$work/out.bin" | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "$FILE read back $2 differs: sha256 $got, written $want"
}

# The storage node holding the most chunks of the file: killing it takes away the most copies.
# shellcheck disable=SC2016 # JavaScript in single quotes
busiest_holder() {
  client stat "$FILE" --json </dev/null | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const count = new Map();
      for (const c of JSON.parse(s).chunks)
        for (const r of c.replicas) { const h = new URL(r.url).hostname; count.set(h, (count.get(h) ?? 0) + 1); }
      const [best] = [...count].sort((a, b) => b[1] - a[1]);
      if (!best) process.exit(1);
      console.log(best[0]);
    });'
}

test_files() {
  local want victim id
  head -c "$FILE_SIZE" /dev/urandom >"$work/in.bin"
  want=$(sha256sum <"$work/in.bin" | cut -d' ' -f1)
  say "writing $FILE ($FILE_SIZE bytes, sha256 ${want:0:16}...) through the client"
  client write "$FILE" - <"$work/in.bin" >>"$work/log" || fail "writing $FILE through the client failed"
  say "reading it back"
  check_read "$want" "with every node up"

  victim=$(busiest_holder) || fail "stat $FILE named no storage node holding it"
  say "killing $victim, which holds chunks of it"
  quiet compose kill "$victim"
  wait_until 30 "$victim seen as not up" node_not_up "$victim"
  say "reading it back with $victim down"
  check_read "$want" "with $victim down"
  id=$(compose ps -q "$victim" 2>>"$work/log")
  [ "$(podman inspect -f '{{.State.Running}}' "$id")" = false ] || fail "$victim was running again during the read"
  say "read back byte-identical with and without $victim"
}

# remove_labelled LIST-COMMAND REMOVE-COMMAND: removes whatever of this project LIST-COMMAND lists.
# shellcheck disable=SC2086 # the commands and the ids are split into words on purpose
remove_labelled() {
  local ids
  ids=$(podman $1 -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null) || return 0
  [ -z "$ids" ] || podman $2 $ids >/dev/null 2>&1 || true
}

teardown() {
  if [ -n "$compose_pid" ]; then
    kill "$compose_pid" 2>/dev/null || true
    wait "$compose_pid" 2>/dev/null || true
    compose_pid=""
  fi
  if [ -n "$service_pid" ]; then
    compose down --volumes --remove-orphans --timeout 5 >>"$work/log" 2>&1 ||
      echo "test-image: warning: compose down failed" >&2
  fi
  # Whatever compose left behind (after an interrupted run, say) carries the project's label.
  if command -v podman >/dev/null; then
    remove_labelled "ps -a" "rm -f --volumes" # with their anonymous /data volumes
    remove_labelled "volume ls" "volume rm -f"
    remove_labelled "network ls" "network rm -f"
  fi
  if [ -n "$service_pid" ]; then
    kill "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
  fi
  if [ "$remove_images" = 1 ] && [ -n "${CONTAINERS_STORAGE_CONF:-}" ]; then
    # Only this test's own store (see STORE): its images and their build cache.
    podman system reset --force >/dev/null 2>&1 && rm -rf "$STORE" "$RUNROOT" ||
      echo "test-image: warning: removing the images failed" >&2
  fi
}

finish() {
  local rc=$?
  # Back to the script's own output, whatever redirection the exit happened under; a second
  # Ctrl-C would leave half the cluster behind, and the teardown's commands have deadlines.
  exec 1>&3 2>&4
  trap - EXIT
  trap '' INT TERM
  set +e
  if [ -n "$interrupted" ]; then
    failure="interrupted while $step"
    rc=130
    interrupted="" # the teardown's own commands must not stop at it
  elif [ "$rc" != 0 ]; then
    if [ -z "$failure" ]; then
      if [ "$rc" = 124 ]; then failure="$step: timed out"; else failure="$step: failed (exit $rc)"; fi
    fi
    if [ -s "$work/log" ]; then
      echo "test-image: last lines of the log:" >&2
      tail -n 40 "$work/log" | sed 's/^/  | /' >&2
    fi
  fi
  say "tearing down"
  teardown
  [ -z "$work" ] || rm -rf "$work"
  if [ "$rc" = 0 ]; then
    printf 'test-image: PASS (%ds)\n' $((SECONDS - started))
  else
    printf 'test-image: FAIL (%ds): %s\n' $((SECONDS - started)) "$failure" >&2
  fi
  exit "$rc"
}

main() {
  work=$(mktemp -d -t dfs-image-test.XXXXXX)
  : >"$work/log"
  exec 3>&1 4>&2
  trap finish EXIT
  trap 'interrupted=1' INT TERM
  [ "$(id -u)" = 0 ] || fail "needs root: podman's container networks and debootstrap do"
  ensure_packages
  configure_engine
  build_debian_image
  build_node_image
  build_dfs_image
  start_service
  start_cluster
  test_files
}

main
