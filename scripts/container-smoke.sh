#!/usr/bin/env bash
# Container smoke test, offline: builds the repo's Dockerfile with podman and
# runs the image the way deploy/k8s does (read-only root, all capabilities
# dropped, no new privileges) against a private MariaDB:
#   1. base images debian:bookworm (debootstrap --variant=minbase from the
#      Debian mirror apt already uses) and debian:bookworm-slim (the same
#      without docs, man pages and locales), imported under the names the
#      Dockerfile's FROM lines use, so no registry is needed;
#   2. podman build of ./Dockerfile (--network=host);
#   3. the server container on loopback, a loopback upstream, one batch
#      through the image's own CLI (--entrypoint batchfetch), the rows in
#      MariaDB and the metrics checked;
#   4. SIGTERM: the server must drain and exit 0.
# Prints the time of each phase; exits non-zero with a message naming the
# failed check. Containers, MariaDB and temporary files are removed on exit,
# also on failure; the logs of the last run stay in var/container/last-run/.
#
# Must run as root (debootstrap, rootful podman). Everything podman stores
# lives in a private storage under var/container/ (git-ignored), so this
# never touches the machine's own podman images, and a second run reuses the
# base images and the build's layer cache. The base tarballs are cached there
# too: a run skips debootstrap when they exist. `rm -rf var/container` (after
# `podman --root var/container/storage ... system reset`, or as root when no
# container runs) starts from scratch.
#
# Environment:
#   BATCHFETCH_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the one
#                             apt uses for bookworm, else deb.debian.org)
#   BATCHFETCH_SMOKE_KEEP=1   keep the built image's dangling predecessors
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SUITE=bookworm
ARCH=$(dpkg --print-architecture)
STATE="$ROOT/var/container"
IMAGE=localhost/batchfetch:smoke
LOGS="$STATE/last-run"

die() {
  echo "container-smoke: FAIL: $*" >&2
  exit 1
}
note() { echo "container-smoke: $*"; }

# Phase timing: `phase NAME` ends the previous phase (printing its time) and
# starts NAME; `phase` alone ends the last one.
PHASE="" PHASE_START=0 RUN_START=$(date +%s.%N)
phase() {
  local now
  now=$(date +%s.%N)
  if [[ -n "$PHASE" ]]; then
    awk -v p="$PHASE" -v a="$PHASE_START" -v b="$now" \
      'BEGIN { printf "::: container-smoke: %-16s %6.1f s\n", p, b - a }'
  fi
  PHASE=${1:-} PHASE_START=$now
  [[ -z "$PHASE" ]] || echo "::: container-smoke: $PHASE ..."
}

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and rootful podman)"

phase install-deps
BATCHFETCH_CONTAINER_DEPS=1 scripts/install-deps.sh

mkdir -p "$STATE" "$LOGS"
# One run at a time per checkout: they share the storage and the tarballs.
exec 9>"$STATE/lock"
flock -n 9 || die "another container-smoke run holds $STATE/lock"
rm -f "$LOGS"/*

# --- private podman configuration -------------------------------------------
# runc: crun refuses hybrid (v1 + unified) cgroup hierarchies as some VMs
# have. cgroupfs and a file event log: no systemd or journald is needed.
# default_ulimits: podman's default raises nofile/nproc above what root may
# set inside some VMs, and the container would not start.
# The run-time state goes to /run (tmpfs on most machines, so a reboot
# clears it as podman expects), keyed by this checkout's storage path.
RUNROOT="/run/batchfetch-container-smoke-$(echo "$STATE" | md5sum | cut -c1-8)"
cat >"$STATE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$RUNROOT/events.log"
tmp_dir = "$RUNROOT/libpod"
EOF
cat >"$STATE/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$STATE/storage"
runroot = "$RUNROOT/storage"
EOF
export CONTAINERS_CONF="$STATE/containers.conf"
export CONTAINERS_STORAGE_CONF="$STATE/storage.conf"
# No short-name prompts, no registry look-ups: only local images are used.
export CONTAINERS_REGISTRIES_CONF="$STATE/registries.conf"
echo 'short-name-mode = "permissive"' >"$CONTAINERS_REGISTRIES_CONF"

# --- clean-up ---------------------------------------------------------------
TMP=$(mktemp -d /tmp/batchfetch-smoke.XXXXXX)
SERVER_CT="batchfetch-smoke-server-$$"
CLI_CT="batchfetch-smoke-cli-$$"
UPSTREAM_PID=""
ROOTFS=""
cleanup() {
  local status=$?
  set +e
  if ((status != 0)); then
    echo "container-smoke: failed in phase '${PHASE:-?}'; logs in $LOGS" >&2
    if podman container exists "$SERVER_CT" 2>/dev/null; then
      podman logs "$SERVER_CT" >"$LOGS/server.log" 2>&1
    fi
    for f in "$LOGS"/*.log; do
      [[ -s "$f" ]] || continue
      echo "----- last lines of $f" >&2
      tail -n 40 "$f" >&2
    done
  fi
  # -i: without it, one missing name (the CLI's --rm container) makes
  # podman remove none of them.
  podman rm -f -i -v -t 0 "$SERVER_CT" "$CLI_CT" >/dev/null 2>&1
  [[ -n "$UPSTREAM_PID" ]] && kill "$UPSTREAM_PID" 2>/dev/null
  [[ -d "$TMP/mariadb" ]] && scripts/mariadb-local.sh stop "$TMP/mariadb" 2>/dev/null
  # debootstrap unmounts what it mounts in the target, but never delete
  # through a mount point left behind by a failed run.
  if [[ -n "$ROOTFS" && -d "$ROOTFS" ]]; then
    awk -v r="$ROOTFS/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r |
      xargs -r -n1 umount -l
    rm -rf --one-file-system "$ROOTFS"
  fi
  rm -rf "$TMP"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Containers left by a run that was killed (the storage is ours alone).
podman rm -a -f -v -t 0 >/dev/null 2>&1 || true

# --- 1. base images ---------------------------------------------------------
# The Debian mirror apt uses for $SUITE (else any Debian suite's mirror),
# and the suites of it the image's apt may use: the same ones the host uses.
apt_targets() {
  # shellcheck disable=SC2016  # apt's own $(...) placeholders
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
    'Identifier: Packages' 2>/dev/null | sort -u
}
debian_mirror() {
  [[ -n "${BATCHFETCH_DEBIAN_MIRROR:-}" ]] && {
    echo "$BATCHFETCH_DEBIAN_MIRROR"
    return
  }
  local uri
  uri=$(apt_targets | awk -v s="$SUITE" '$2 == s && $3 == "main" {print $1; exit}')
  [[ -n "$uri" ]] || uri=$(apt_targets | awk '$1 ~ /\/debian\/?$/ && $2 !~ /-/ && $3 == "main" {print $1; exit}')
  echo "${uri:-http://deb.debian.org/debian/}"
}
# /etc/apt/sources.list of the base image: the mirror for $SUITE, plus
# $SUITE-updates and $SUITE-security where the host has them (as the
# official image has), so the build sees current packages.
image_sources() {
  local mirror=$1
  echo "deb $mirror $SUITE main"
  apt_targets | awk -v s="$SUITE" '($2 == s "-updates" || $2 == s "-security") && $3 == "main" {
      print "deb " $1 " " $2 " main" }'
}

BASE_TAR="$STATE/debian-$SUITE-$ARCH.tar"
SLIM_TAR="$STATE/debian-$SUITE-slim-$ARCH.tar"
if [[ ! -s "$BASE_TAR" || ! -s "$SLIM_TAR" ]]; then
  phase debootstrap
  MIRROR=$(debian_mirror)
  note "debootstrap --variant=minbase $SUITE from $MIRROR"
  ROOTFS="$STATE/rootfs.tmp"
  rm -rf --one-file-system "$ROOTFS"
  debootstrap --variant=minbase --arch="$ARCH" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$LOGS/debootstrap.log" 2>&1 || die "debootstrap failed (see $LOGS/debootstrap.log)"
  image_sources "$MIRROR" >"$ROOTFS/etc/apt/sources.list"
  # What the official image leaves out: package caches and host files that
  # podman provides at run time.
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/etc/resolv.conf "$ROOTFS"/etc/hostname
  tar --numeric-owner -C "$ROOTFS" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
  # The slim variant, as the official one: no docs (copyright files stay),
  # man pages, info or locales, and dpkg told not to install them later.
  cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  find "$ROOTFS/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$ROOTFS"/usr/share/{man,groff,info,lintian,linda,locale}/*
  tar --numeric-owner -C "$ROOTFS" -cf "$SLIM_TAR.tmp" . && mv "$SLIM_TAR.tmp" "$SLIM_TAR"
  rm -rf --one-file-system "$ROOTFS"
  ROOTFS=""
  # New tarballs: re-import below.
  podman rmi -f docker.io/library/debian:$SUITE docker.io/library/debian:$SUITE-slim >/dev/null 2>&1 || true
fi
phase import-base
for pair in "$BASE_TAR:docker.io/library/debian:$SUITE" "$SLIM_TAR:docker.io/library/debian:$SUITE-slim"; do
  tar=${pair%%:*} name=${pair#*:}
  if podman image exists "$name"; then
    note "$name: present"
  else
    podman import --quiet --change 'CMD ["bash"]' "$tar" "$name" >/dev/null ||
      die "podman import $tar failed"
    note "$name: imported from $tar ($(du -m "$tar" | cut -f1) MB)"
  fi
done

# --- 2. the image -----------------------------------------------------------
phase build-image
note "podman build -t $IMAGE . (log: $LOGS/build.log)"
podman build --network=host --pull=never -t "$IMAGE" -f Dockerfile . \
  >"$LOGS/build.log" 2>&1 || die "podman build failed (see $LOGS/build.log)"
# Tag the build stage's image too, so that the prune below keeps it: left
# untagged it has no children, and the prune would drop its layers (the
# installed build dependencies above all) and every run would rebuild them.
# Its id is the last "--> ID" line before the next stage's first step (a
# second `podman build --target=build` would compile again whenever a file
# changed in between).
build_stage=$(awk '
  /^\[[0-9]+\/[0-9]+\] STEP 1\// { if (in_build) { print id; exit } in_build = / AS build$/ }
  /^--> [0-9a-f]+$/ { id = $2 }' "$LOGS/build.log")
if [[ -n "$build_stage" ]]; then
  podman tag "$build_stage" "$IMAGE-build"
else
  note "warning: build stage not found in $LOGS/build.log; its layers will not be cached"
fi
# Each rebuild leaves its predecessors untagged; drop those (our storage only).
[[ "${BATCHFETCH_SMOKE_KEEP:-0}" == 1 ]] || podman image prune -f >/dev/null
note "image size: $(podman image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"

# --- 3. run it --------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

phase start-mariadb
DB_PORT=$(BATCHFETCH_MARIADB_OWNER_PID=$$ scripts/mariadb-local.sh start "$TMP/mariadb" 2>"$LOGS/mariadb.log") ||
  die "MariaDB did not start (see $LOGS/mariadb.log)"
sql() {
  mariadb --no-defaults -h127.0.0.1 -P"$DB_PORT" -ubatchfetch -pbatchfetch batchfetch -N -B -e "$1"
}

phase start-upstream
mkdir -p "$TMP/www"
URLS=()
UPSTREAM_PORT=$(free_port)
for i in 1 2 3 4 5; do
  printf '{"item":%d,"name":"smoke"}\n' "$i" >"$TMP/www/item$i.json"
  URLS+=("http://127.0.0.1:$UPSTREAM_PORT/item$i.json")
done
python3 -m http.server --bind 127.0.0.1 --directory "$TMP/www" "$UPSTREAM_PORT" \
  >"$LOGS/upstream.log" 2>&1 &
UPSTREAM_PID=$!

# Waits until 127.0.0.1:$1 accepts connections; $2 names what for messages;
# $3 (optional) is a container that must keep running meanwhile.
wait_port() {
  local port=$1 what=$2 ct=${3:-}
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if [[ -n "$ct" && "$(podman inspect -f '{{.State.Running}}' "$ct" 2>/dev/null)" != true ]]; then
      podman logs "$ct" >"$LOGS/server.log" 2>&1
      die "$what exited before listening (exit $(podman inspect -f '{{.State.ExitCode}}' "$ct"); see $LOGS/server.log)"
    fi
    sleep 0.1
  done
  die "$what did not listen on 127.0.0.1:$port within 60 s"
}
wait_port "$UPSTREAM_PORT" "the upstream (python3 -m http.server)"

phase start-server
GRPC_PORT=$(free_port)
METRICS_PORT=$(free_port)
# As deploy/k8s runs it: read-only root, no capabilities, no new privileges.
# The spool directory is a VOLUME of the image: podman mounts an anonymous,
# writable volume there although the root is read-only (checked below).
SECURE=(--read-only --cap-drop=ALL --security-opt=no-new-privileges --network=host)
podman run -d --name "$SERVER_CT" "${SECURE[@]}" \
  -e BATCHFETCH_MYSQL_HOST=127.0.0.1 -e BATCHFETCH_MYSQL_PORT="$DB_PORT" \
  -e BATCHFETCH_MYSQL_PASSWORD=batchfetch \
  "$IMAGE" --listen="127.0.0.1:$GRPC_PORT" --metrics_listen="127.0.0.1:$METRICS_PORT" \
  --egress_allow_cidr=127.0.0.0/8 --shutdown_grace=10s >/dev/null ||
  die "podman run of the server failed"
wait_port "$GRPC_PORT" "the server container" "$SERVER_CT"

phase check-sandbox
in_server() { podman exec "$SERVER_CT" "$@"; }
[[ "$(in_server id -u)" == 10001 && "$(in_server id -g)" == 10001 ]] ||
  die "the server does not run as 10001:10001 (id: $(in_server id))"
in_server getent group 10001 >/dev/null || die "gid 10001 has no group entry in the image"
# shellcheck disable=SC2016  # awk programs
cap_eff=$(in_server awk '/^CapEff:/ {print $2}' /proc/1/status)
[[ "$cap_eff" =~ ^0+$ ]] || die "the server has capabilities (CapEff $cap_eff)"
# shellcheck disable=SC2016
[[ "$(in_server awk '/^NoNewPrivs:/ {print $2}' /proc/1/status)" == 1 ]] ||
  die "no_new_privs is not set on the server"
if in_server touch /probe 2>/dev/null; then die "the root file system is writable"; fi
spool_mount=$(podman inspect -f '{{range .Mounts}}{{if eq .Destination "/var/lib/batchfetch/spool"}}{{.Type}} rw={{.RW}}{{end}}{{end}}' "$SERVER_CT")
[[ "$spool_mount" == "volume rw=true" ]] ||
  die "no writable volume on /var/lib/batchfetch/spool (mount: '${spool_mount:-none}')"
in_server sh -c 'touch /var/lib/batchfetch/spool/.probe && rm /var/lib/batchfetch/spool/.probe' ||
  die "the spool volume is not writable by the server's user"
note "uid/gid 10001, CapEff 0, no_new_privs, read-only root, spool: $spool_mount"

phase fetch-via-cli
BATCH_ID="container-smoke-$(date +%s)-$$"
# The image's own CLI, sandboxed like the server.
podman run --rm --name "$CLI_CT" "${SECURE[@]}" --entrypoint batchfetch "$IMAGE" \
  fetch --server="127.0.0.1:$GRPC_PORT" --batch-id="$BATCH_ID" --quiet --summary-json \
  --connect-timeout=30s --deadline=60s "${URLS[@]}" >"$LOGS/cli.out" 2>"$LOGS/cli.log" ||
  die "batchfetch fetch exited $? (see $LOGS/cli.out and $LOGS/cli.log)"
ok_lines=$(grep -c '"outcome":"ok"' "$LOGS/cli.out" || true)
((ok_lines == ${#URLS[@]})) ||
  die "the CLI printed $ok_lines ok results, expected ${#URLS[@]} (see $LOGS/cli.out)"
grep -q '"item":3' "$LOGS/cli.out" || die "the CLI output lacks the upstream's JSON body"
note "CLI: ${#URLS[@]} ok results; $(tail -n 1 "$LOGS/cli.out")"

phase check-database
rows=$(sql "SELECT COUNT(*), COALESCE(SUM(outcome = 1 AND http_status = 200), 0) FROM fetch_results WHERE batch_id = '$BATCH_ID'")
[[ "$rows" == "${#URLS[@]}	${#URLS[@]}" ]] ||
  die "fetch_results for $BATCH_ID: (rows, ok) = ($rows), expected ${#URLS[@]} OK rows"
state=$(sql "SELECT state FROM batches WHERE batch_id = '$BATCH_ID'")
[[ "$state" == 2 ]] || die "batch $BATCH_ID has state '$state' in MariaDB, expected 2 (DONE)"
metrics=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
  "http://127.0.0.1:$METRICS_PORT/metrics") || die "GET /metrics on 127.0.0.1:$METRICS_PORT failed"
grep -qx "batchfetch_results_total{outcome=\"ok\"} ${#URLS[@]}" <<<"$metrics" ||
  die "metrics: batchfetch_results_total{outcome=\"ok\"} is not ${#URLS[@]}: $(grep '^batchfetch_results_total' <<<"$metrics" | tr '\n' ' ')"
note "MariaDB: ${#URLS[@]} OK rows, batch DONE; metrics agree"

phase sigterm
podman kill --signal TERM "$SERVER_CT" >/dev/null || die "podman kill --signal TERM failed"
exit_code=$(timeout 60 podman wait "$SERVER_CT") || die "the server did not exit within 60 s of SIGTERM"
podman logs "$SERVER_CT" >"$LOGS/server.log" 2>&1
[[ "$exit_code" == 0 ]] || die "the server exited $exit_code after SIGTERM, expected 0 (see $LOGS/server.log)"
for event in server_started batch_accepted drain_started drain_finished; do
  grep -q "\"event\":\"$event\"" "$LOGS/server.log" || die "the server's log lacks a $event line (see $LOGS/server.log)"
done
note "exit 0 after SIGTERM; log has server_started, batch_accepted, drain_started, drain_finished"

phase
awk -v a="$RUN_START" -v b="$(date +%s.%N)" \
  'BEGIN { printf "::: container-smoke: OK in %.1f s\n", b - a }'
