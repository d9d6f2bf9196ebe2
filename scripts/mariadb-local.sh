#!/usr/bin/env bash
# Runs a private, throwaway MariaDB instance for batchfetch development and tests.
#
# Usage:
#   scripts/mariadb-local.sh start DIR [PORT]
#       Initialises DIR/data on first use, starts mariadbd (detached) listening on
#       127.0.0.1:PORT (a free port is picked when PORT is omitted), waits until it
#       accepts connections and ensures database `batchfetch` and user
#       batchfetch/batchfetch (ALL PRIVILEGES on *.*, from 127.0.0.1 and localhost)
#       exist. If an instance from DIR is already running it is reused.
#       Prints exactly one line on stdout: the port. Also writes it to DIR/port.
#   scripts/mariadb-local.sh stop DIR
#       Stops the instance from DIR if it is running. Idempotent.
#
# Files in DIR: data/, mysqld.sock, mysqld.pid, mysqld.log, port.
# Environment:
#   BATCHFETCH_MARIADB_OWNER_PID  if set on `start`, a detached watchdog stops the
#                                 instance once that process has exited.
#   BATCHFETCH_MARIADB_OWNER_RMDIR=1  the watchdog also removes DIR after stopping.
set -euo pipefail

log() { echo "mariadb-local: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}
usage() {
  echo "usage: $0 start DIR [PORT] | stop DIR" >&2
  exit 2
}

# Returns 0 if the pid in DIR/mysqld.pid belongs to a live mariadbd.
running_pid() {
  local pidfile="$1/mysqld.pid" pid
  [[ -s "$pidfile" ]] || return 1
  pid=$(<"$pidfile")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse by an unrelated process.
  grep -qE 'mariadbd|mysqld' "/proc/$pid/comm" 2>/dev/null || return 1
  echo "$pid"
}

# Prints a currently free TCP port (racy by nature; launch() retries).
pick_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
  else
    echo $((20000 + RANDOM % 30000))
  fi
}

admin() {
  mariadb-admin --no-defaults --socket="$DIR/mysqld.sock" -uroot "$@"
}

# Stops the instance; waits up to 60 s for it to exit, then SIGKILLs it.
do_stop() {
  local pid
  if ! pid=$(running_pid "$DIR"); then
    rm -f "$DIR/mysqld.pid"
    return 0
  fi
  admin shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "mariadbd ($pid) did not stop in time; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$DIR/mysqld.pid"
  log "stopped instance in $DIR"
}

init_datadir() {
  local user_args=()
  [[ $(id -u) -eq 0 ]] && user_args=(--user=root)
  log "initialising $DIR/data"
  rm -rf "$DIR/data.tmp"
  if ! mariadb-install-db --no-defaults --datadir="$DIR/data.tmp" \
    --auth-root-authentication-method=normal --skip-test-db \
    --skip-name-resolve "${user_args[@]}" >"$DIR/install-db.log" 2>&1; then
    tail -n 30 "$DIR/install-db.log" >&2
    die "mariadb-install-db failed (see $DIR/install-db.log)"
  fi
  # Renamed only on success so that a half-initialised dir is never reused.
  mv "$DIR/data.tmp" "$DIR/data"
}

# Starts mariadbd on port $1 and waits until it answers. Returns 1 if the server
# exited during startup (e.g. the port was taken), dies on timeout.
launch() {
  local port="$1" user_args=() pid
  [[ $(id -u) -eq 0 ]] && user_args=(--user=root)
  rm -f "$DIR/mysqld.pid"
  # Detached from our session and stdio so that callers reading our stdout
  # (e.g. popen) see EOF when this script exits.
  setsid nohup mariadbd --no-defaults \
    --datadir="$DIR/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$DIR/mysqld.sock" --pid-file="$DIR/mysqld.pid" \
    --log-error="$DIR/mysqld.log" "${user_args[@]}" \
    --skip-name-resolve --max-allowed-packet=64M \
    --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
    --max-connections=1000 \
    </dev/null >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      return 1
    fi
    if admin ping >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  tail -n 30 "$DIR/mysqld.log" >&2 || true
  die "mariadbd did not accept connections within 60 s (see $DIR/mysqld.log)"
}

setup_schema() {
  mariadb --no-defaults --socket="$DIR/mysqld.sock" -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS batchfetch;
CREATE USER IF NOT EXISTS 'batchfetch'@'127.0.0.1' IDENTIFIED BY 'batchfetch';
CREATE USER IF NOT EXISTS 'batchfetch'@'localhost' IDENTIFIED BY 'batchfetch';
CREATE USER IF NOT EXISTS 'batchfetch'@'::1' IDENTIFIED BY 'batchfetch';
GRANT ALL PRIVILEGES ON *.* TO 'batchfetch'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'batchfetch'@'localhost';
GRANT ALL PRIVILEGES ON *.* TO 'batchfetch'@'::1';
FLUSH PRIVILEGES;
SQL
}

start_watchdog() {
  local owner="$1" pid="$2" rmdir="${BATCHFETCH_MARIADB_OWNER_RMDIR:-0}"
  [[ "$owner" =~ ^[0-9]+$ ]] || die "BATCHFETCH_MARIADB_OWNER_PID is not a pid: $owner"
  # shellcheck disable=SC2016  # expanded by the inner shell
  setsid nohup bash -c '
    owner=$1 pid=$2 script=$3 dir=$4 rmdir=$5
    while kill -0 "$owner" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
    if ! kill -0 "$owner" 2>/dev/null; then
      "$script" stop "$dir" || true
      if [[ "$rmdir" == 1 ]]; then rm -rf "$dir"; fi
    fi' watchdog "$owner" "$pid" "$(readlink -f "$0")" "$DIR" "$rmdir" \
    </dev/null >/dev/null 2>&1 &
}

do_start() {
  local want_port="${1:-}" port pid attempt
  [[ -z "$want_port" || "$want_port" =~ ^[0-9]+$ ]] || die "bad port: $want_port"
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if ((${#DIR} > 90)); then
    die "DIR path too long for a unix socket path: $DIR"
  fi
  if pid=$(running_pid "$DIR"); then
    port=$(<"$DIR/port")
    if [[ -n "$want_port" && "$want_port" != "$port" ]]; then
      log "warning: reusing running instance on port $port (requested $want_port)"
    fi
    log "reusing running instance (pid $pid) on port $port"
  else
    [[ -d "$DIR/data" ]] || init_datadir
    local saved_port=""
    [[ -s "$DIR/port" ]] && saved_port=$(<"$DIR/port")
    for attempt in 1 2 3 4 5; do
      # Without an explicit PORT, a restarted instance tries its previous port first.
      if [[ -n "$want_port" ]]; then
        port="$want_port"
      elif [[ $attempt -eq 1 && "$saved_port" =~ ^[0-9]+$ ]]; then
        port="$saved_port"
      else
        port=$(pick_port)
      fi
      log "starting mariadbd on 127.0.0.1:$port (attempt $attempt)"
      if launch "$port"; then
        break
      fi
      if [[ -n "$want_port" || $attempt -eq 5 ]]; then
        tail -n 30 "$DIR/mysqld.log" >&2 || true
        die "mariadbd exited during startup (see $DIR/mysqld.log)"
      fi
      log "mariadbd exited during startup; retrying with another port"
    done
    echo "$port" >"$DIR/port"
  fi
  setup_schema || die "could not create database/user"
  if [[ -n "${BATCHFETCH_MARIADB_OWNER_PID:-}" ]]; then
    start_watchdog "$BATCHFETCH_MARIADB_OWNER_PID" "$(running_pid "$DIR")"
  fi
  echo "$port"
}

(($# >= 2)) || usage
CMD="$1"
DIR="$2"
case "$CMD" in
  start)
    (($# <= 3)) || usage
    do_start "${3:-}"
    ;;
  stop)
    (($# == 2)) || usage
    if [[ -d "$DIR" ]]; then
      DIR=$(cd "$DIR" && pwd)
      do_stop
    fi
    ;;
  *) usage ;;
esac
