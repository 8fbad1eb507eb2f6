#!/usr/bin/env bash
# A private PostgreSQL for the test suite: Debian's package, its own data directory, listening
# on 127.0.0.1 only (TCP) plus a Unix socket inside the state directory. Never touches the
# system clusters (`pg_lsclusters`).
#
#   .ci/postgres.sh start    install `postgresql` if missing, create or reuse the cluster, start
#                            it, ensure role `referral`/`referral` (CREATEDB) and database
#                            `referral_test`, wait until ready, then print on stdout:
#                              export REFERRAL_TEST_DATABASE_URL=postgresql+psycopg://...
#                            (use: eval "$(.ci/postgres.sh start)")
#   .ci/postgres.sh stop     stop it (no-op when not running)
#   .ci/postgres.sh status   say whether it runs, and on which port (stderr; exit 0 if running)
#   .ci/postgres.sh url      print the export line of the running cluster
#   .ci/postgres.sh purge    stop it and delete its state directory
#
# Only the export line goes to stdout; everything else goes to stderr.
# Environment: REFERRAL_CI_PG_DIR (state dir, default /tmp/referral-ci-pg),
#              REFERRAL_CI_PGPORT (force a port; default 25432 if free, else any free port;
#              25432 lies below the ephemeral range, so no client connection takes it while
#              the reliability suite has the server restarting).
# Run as root (CI): the server runs as the `postgres` user through runuser. As a normal user
# with PostgreSQL installed it runs the server as that user.
set -euo pipefail

STATE_DIR="${REFERRAL_CI_PG_DIR:-/tmp/referral-ci-pg}"
DATA_DIR="$STATE_DIR/data"
LOG_FILE="$STATE_DIR/postgres.log"
PORT_FILE="$STATE_DIR/port"
DEFAULT_PORT=25432
ROLE=referral
PASSWORD=referral
DATABASE=referral_test

log() { echo "postgres.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the server's owner, from / (the caller's cwd may be unreadable for it),
# without our lock descriptor (8): a server started here must not hold the lock forever.
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@" 8>&-)
    else
        (cd / && "$@" 8>&-)
    fi
}

# Newest /usr/lib/postgresql/<major>/bin holding the server binaries, or nothing.
pg_bin() {
    local d best=""
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && best="$d"
    done
    echo "$best"
}

ensure_installed() {
    if [ -n "$(pg_bin)" ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        return 0
    fi
    is_root || die "PostgreSQL server binaries are missing; install Debian's 'postgresql' package"
    export DEBIAN_FRONTEND=noninteractive
    if [ "${REFERRAL_CI_APT_UPDATED:-0}" != 1 ]; then
        log "apt-get update"
        apt-get update -qq >&2
        export REFERRAL_CI_APT_UPDATED=1
    fi
    log "installing Debian's postgresql package"
    apt-get install -y -qq postgresql >&2
    [ -n "$(pg_bin)" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
}

# Bound as PostgreSQL binds (SO_REUSEADDR): the port of a server just stopped, whose closed
# connections linger in TIME_WAIT, is free for it, so a restart keeps its port.
port_is_free() {
    python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

any_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

choose_port() {
    if [ -n "${REFERRAL_CI_PGPORT:-}" ]; then
        port_is_free "$REFERRAL_CI_PGPORT" || die "REFERRAL_CI_PGPORT=$REFERRAL_CI_PGPORT is in use"
        echo "$REFERRAL_CI_PGPORT"; return
    fi
    local previous=""
    [ -f "$PORT_FILE" ] && previous="$(cat "$PORT_FILE")"
    local p
    for p in $previous $DEFAULT_PORT; do
        if port_is_free "$p"; then echo "$p"; return; fi
    done
    any_free_port
}

is_running() {
    local bin="$1"
    [ -f "$DATA_DIR/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

# The port of the running server (4th line of postmaster.pid).
running_port() { sed -n 4p "$DATA_DIR/postmaster.pid"; }

url_for() { echo "postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$1/$DATABASE"; }

init_cluster() {
    local bin="$1" major
    major="$(basename "$(dirname "$bin")")"
    if [ -d "$DATA_DIR" ]; then
        if [ -f "$DATA_DIR/PG_VERSION" ] && [ "$(cat "$DATA_DIR/PG_VERSION")" = "$major" ] \
            && [ -f "$DATA_DIR/postgresql.conf" ]; then
            return 0   # reuse
        fi
        log "discarding unusable data directory $DATA_DIR (other version or incomplete)"
        rm -rf "$DATA_DIR"
    fi
    log "initdb (PostgreSQL $major) in $DATA_DIR"
    mkdir -p "$DATA_DIR"
    is_root && chown postgres:postgres "$DATA_DIR"
    chmod 700 "$DATA_DIR"
    as_pg "$bin/initdb" -D "$DATA_DIR" -U postgres -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >&2
    # Throwaway test server: TCP on 127.0.0.1 only, socket in our state dir, durability off.
    cat >>"$DATA_DIR/postgresql.conf" <<EOF

# --- .ci/postgres.sh ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$STATE_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

psql_admin() {
    local bin="$1" port="$2"; shift 2
    as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$STATE_DIR" -p "$port" -U postgres -d postgres "$@"
}

ensure_role_and_db() {
    local bin="$1" port="$2"
    psql_admin "$bin" "$port" >&2 <<EOF
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
  ELSE
    ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
  END IF;
END
\$\$;
EOF
    if [ "$(psql_admin "$bin" "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != 1 ]; then
        psql_admin "$bin" "$port" -c "CREATE DATABASE $DATABASE OWNER $ROLE" >&2
    fi
}

wait_ready() {
    local bin="$1" port="$2" i
    for i in $(seq 1 60); do
        if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres; then
            return 0
        fi
        sleep 0.5
    done
    tail -n 30 "$LOG_FILE" >&2 || true
    die "PostgreSQL on 127.0.0.1:$port is not ready after 30 s (log: $LOG_FILE)"
}

start() {
    ensure_installed
    local bin port
    bin="$(pg_bin)"
    mkdir -p "$STATE_DIR"
    is_root && chown postgres:postgres "$STATE_DIR"
    chmod 700 "$STATE_DIR"
    # serialize concurrent starts on this state dir
    exec 8>"$STATE_DIR.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 120 8 || die "could not lock $STATE_DIR.lock within 120 s"
    fi

    init_cluster "$bin"
    if is_running "$bin"; then
        port="$(running_port)"
        log "reusing the running server on 127.0.0.1:$port ($DATA_DIR)"
    else
        port="$(choose_port)"
        log "starting PostgreSQL $(basename "$(dirname "$bin")") on 127.0.0.1:$port ($DATA_DIR, log $LOG_FILE)"
        touch "$LOG_FILE"
        is_root && chown postgres:postgres "$LOG_FILE"
        if ! as_pg "$bin/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t 60 -o "-p $port" start >&2; then
            tail -n 30 "$LOG_FILE" >&2 || true
            die "pg_ctl start failed (log: $LOG_FILE)"
        fi
    fi
    echo "$port" >"$PORT_FILE"
    wait_ready "$bin" "$port"
    ensure_role_and_db "$bin" "$port"
    # the exact path the tests take: TCP, password auth, as the application role
    PGPASSWORD="$PASSWORD" "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U "$ROLE" -d "$DATABASE" \
        -tAc 'SELECT 1' >/dev/null || die "cannot log in as $ROLE over TCP on 127.0.0.1:$port"
    log "ready: $(url_for "$port")"
    echo "export REFERRAL_TEST_DATABASE_URL=$(url_for "$port")"
}

stop() {
    local bin
    bin="$(pg_bin)"
    if [ -z "$bin" ] || ! is_running "$bin"; then
        log "not running ($DATA_DIR)"
        return 0
    fi
    log "stopping PostgreSQL on 127.0.0.1:$(running_port)"
    as_pg "$bin/pg_ctl" -D "$DATA_DIR" -m fast -w -t 60 stop >&2
}

status() {
    local bin
    bin="$(pg_bin)"
    if [ -n "$bin" ] && is_running "$bin"; then
        log "running on 127.0.0.1:$(running_port) ($DATA_DIR)"
        return 0
    fi
    log "not running ($DATA_DIR)"
    return 3
}

url() {
    status >/dev/null 2>&1 || die "not running; use: $0 start"
    echo "export REFERRAL_TEST_DATABASE_URL=$(url_for "$(running_port)")"
}

purge() {
    stop
    log "removing $STATE_DIR"
    rm -rf "$STATE_DIR" "$STATE_DIR.lock"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) url ;;
    purge) purge ;;
    *) echo "usage: $0 start|stop|status|url|purge" >&2; exit 2 ;;
esac
