#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite, on 127.0.0.1 only, from Debian's package.
#   .ci/postgres.sh start   installs postgresql if needed, starts a fresh cluster and prints
#                           `export REFERRAL_TEST_DATABASE_URL=...` on stdout (eval it)
#   .ci/postgres.sh stop    stops that cluster
# Everything but the export line goes to stderr.
set -euo pipefail

PGDATA_DIR="${REFERRAL_CI_PGDATA:-/tmp/referral-ci-postgres}"
SOCKET_DIR="${PGDATA_DIR}-socket"

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
    echo "installing Debian's postgresql package" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  local bin port
  bin="$(pg_bin)"
  port="${REFERRAL_CI_PGPORT:-$(free_port)}"
  stop 2>/dev/null || true
  rm -rf "$PGDATA_DIR" "$SOCKET_DIR"
  mkdir -p "$PGDATA_DIR" "$SOCKET_DIR"
  chown postgres:postgres "$PGDATA_DIR" "$SOCKET_DIR"
  runuser -u postgres -- "$bin/initdb" -D "$PGDATA_DIR" --auth-local=trust \
    --auth-host=scram-sha-256 --username=postgres --encoding=UTF8 >&2
  runuser -u postgres -- "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $SOCKET_DIR -c fsync=off" start >&2
  runuser -u postgres -- "$bin/psql" -h "$SOCKET_DIR" -p "$port" -U postgres -q \
    -c "CREATE ROLE referral LOGIN PASSWORD 'referral' CREATEDB" >&2
  runuser -u postgres -- "$bin/createdb" -h "$SOCKET_DIR" -p "$port" -U postgres \
    -O referral referral_test >&2
  "$bin/pg_isready" -h 127.0.0.1 -p "$port" >&2
  echo "$port" > "$PGDATA_DIR/port"
  echo "export REFERRAL_TEST_DATABASE_URL=postgresql+psycopg://referral:referral@127.0.0.1:$port/referral_test"
}

stop() {
  local bin
  bin="$(pg_bin)"
  if [ -n "$bin" ] && [ -f "$PGDATA_DIR/PG_VERSION" ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >&2 || true
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
