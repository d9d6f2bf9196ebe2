#!/usr/bin/env bash
# Quickstart: installs what is missing, builds, starts a private MariaDB
# (data under var/mariadb, git-ignored) and runs the server in the foreground
# on port ${BATCHFETCH_PORT:-50051}. Extra arguments go to batchfetch_server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
db_port=$(scripts/mariadb-local.sh start "$PWD/var/mariadb" "${BATCHFETCH_MARIADB_PORT:-}")
echo "MariaDB on 127.0.0.1:$db_port (data in var/mariadb; stop: scripts/mariadb-local.sh stop var/mariadb)" >&2
export BATCHFETCH_MYSQL_PASSWORD=${BATCHFETCH_MYSQL_PASSWORD:-batchfetch}
# Loopback is opened so local test upstreams work; every other internal
# range stays denied (see README, Egress). Drop the flag to deny loopback too.
# It serves plaintext on loopback only: to expose it, pass e.g.
# --listen=0.0.0.0:50051 with --tls_cert/--tls_key (README, TLS and mTLS);
# a later flag wins.
# Results MySQL cannot take are kept in var/spool until it is back.
mkdir -p var/spool
exec build/batchfetch_server --listen="127.0.0.1:${BATCHFETCH_PORT:-50051}" \
  --mysql_host=127.0.0.1 --mysql_port="$db_port" \
  --spool_dir="$PWD/var/spool" \
  --egress_allow_cidr=127.0.0.0/8 "$@"
