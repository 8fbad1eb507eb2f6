#!/usr/bin/env bash
# Start the local development Keycloak with the `referral` realm imported.
#
#   deploy/keycloak/start.sh [RUN_DIR]
#
# RUN_DIR (default $REFERRAL_KEYCLOAK_RUN_DIR or <repo>/.data/keycloak) holds this run's
# Keycloak home (symlinks into the cached distribution + a fresh data/ folder), the log,
# the pid file and the generated admin password. It is wiped at every start, and the
# database is in-memory, so each run starts from the realm export and nothing else.
#
# Environment:
#   REFERRAL_KEYCLOAK_PORT             HTTP port (default 8081), bound to 127.0.0.1 only
#   REFERRAL_KEYCLOAK_MANAGEMENT_PORT  health/management port (default PORT+1000), 127.0.0.1
#   REFERRAL_KEYCLOAK_ADMIN_USER       bootstrap admin of the master realm (default admin)
#   REFERRAL_KEYCLOAK_ADMIN_PASSWORD   its password (default: random, stored 0600 in RUN_DIR)
#   REFERRAL_KEYCLOAK_START_TIMEOUT    seconds to wait for the realm (default 240)
#   REFERRAL_KEYCLOAK_JAVA_OPTS        extra JVM options
#   REFERRAL_JAVA_HOME                 force a JDK (otherwise the newest Java 17+ found)
#   REFERRAL_KEYCLOAK_REALM_DIR        the realm export(s) to import (default: realm/ here;
#                                      `make run` writes one whose web-login redirect URIs
#                                      follow REFERRAL_API_BASE_URL)
#
# Prints the realm issuer on stdout once the realm's OIDC discovery document answers.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ $# -ge 1 ]; then KC_RUN_DIR="$1"; fi
[ -n "$KC_RUN_DIR" ] && [ "$KC_RUN_DIR" != "/" ] || kc_die "bad run directory '$KC_RUN_DIR'"
TIMEOUT="${REFERRAL_KEYCLOAK_START_TIMEOUT:-240}"
ADMIN_USER="${REFERRAL_KEYCLOAK_ADMIN_USER:-admin}"

kc_select_java
"$KC_DEPLOY_DIR/fetch.sh" >/dev/null

mkdir -p "$KC_RUN_DIR"
KC_RUN_DIR="$(cd "$KC_RUN_DIR" && pwd)"
PID_FILE="$KC_RUN_DIR/keycloak.pid"
LOG_FILE="$KC_RUN_DIR/keycloak.log"
if [ -f "$PID_FILE" ] && kc_pid_alive "$(cat "$PID_FILE")"; then
    kc_die "already running (pid $(cat "$PID_FILE"), $PID_FILE); stop it with deploy/keycloak/stop.sh"
fi

BASE_URL="http://127.0.0.1:$KC_PORT"
ISSUER="$BASE_URL/realms/$KC_REALM"
for port in "$KC_PORT" "$KC_MGMT_PORT"; do
    if kc_http_ok "http://127.0.0.1:$port/" || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        kc_die "port $port on 127.0.0.1 is already in use"
    fi
done

# Fresh per-run home: bin/ is copied (kc.sh derives kc.home.dir from its own resolved
# path), the read-only parts are symlinked to the cached distribution, data/ is new.
RUN_HOME="$KC_RUN_DIR/home"
rm -rf "$RUN_HOME" "$PID_FILE" "$LOG_FILE" "$KC_RUN_DIR/keycloak.env"
mkdir -p "$RUN_HOME/data/import"
cp -R "$KC_HOME/bin" "$RUN_HOME/bin"
for entry in lib conf providers themes version.txt; do
    [ -e "$KC_HOME/$entry" ] && ln -s "$KC_HOME/$entry" "$RUN_HOME/$entry"
done
cp "${REFERRAL_KEYCLOAK_REALM_DIR:-$KC_DEPLOY_DIR/realm}"/*.json "$RUN_HOME/data/import/"

if [ -n "${REFERRAL_KEYCLOAK_ADMIN_PASSWORD:-}" ]; then
    ADMIN_PASSWORD="$REFERRAL_KEYCLOAK_ADMIN_PASSWORD"
else
    ADMIN_PASSWORD="$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)"
fi
(umask 077 && printf '%s\n' "$ADMIN_PASSWORD" > "$KC_RUN_DIR/admin-password")

# Extra JVM options, if any. Measured on 2 cores: C1-only (-XX:TieredStopAtLevel=1), Java 17
# vs 25 made no measurable difference to startup, so the defaults of kc.sh are kept.
JAVA_OPTS_APPEND="${REFERRAL_KEYCLOAK_JAVA_OPTS:-}"
export JAVA_OPTS_APPEND
export KC_BOOTSTRAP_ADMIN_USERNAME="$ADMIN_USER"
export KC_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD"

# Re-augmentation (first start after unpacking) writes into the shared distribution:
# serialize starts so two runs never do it at once. fd 8 is closed for the server.
exec 8>"$KC_CACHE_DIR/.start.lock"
flock 8 2>/dev/null || true

start_ts="$(date +%s)"
kc_log "starting Keycloak $KC_VERSION (JAVA_HOME=$JAVA_HOME) on $BASE_URL, management on 127.0.0.1:$KC_MGMT_PORT, run dir $KC_RUN_DIR"
setsid "$RUN_HOME/bin/kc.sh" start-dev \
    "${KC_BUILD_OPTS[@]}" \
    --import-realm \
    --http-host=127.0.0.1 \
    --http-port="$KC_PORT" \
    --hostname="$BASE_URL" \
    --http-management-host=127.0.0.1 \
    --http-management-port="$KC_MGMT_PORT" \
    --log-console-output=default \
    </dev/null >"$LOG_FILE" 2>&1 8>&- &
PID=$!
echo "$PID" > "$PID_FILE"

deadline=$((start_ts + TIMEOUT))
until kc_http_ok "$ISSUER/.well-known/openid-configuration"; do
    if ! kc_pid_alive "$PID"; then
        tail -n 40 "$LOG_FILE" >&2 || true
        rm -f "$PID_FILE"
        kc_die "Keycloak exited during startup (log: $LOG_FILE)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        tail -n 40 "$LOG_FILE" >&2 || true
        "$KC_DEPLOY_DIR/stop.sh" "$KC_RUN_DIR" >&2 || true
        kc_die "Keycloak did not answer within ${TIMEOUT}s (log: $LOG_FILE)"
    fi
    sleep 0.5
done
elapsed=$(( $(date +%s) - start_ts ))

cat > "$KC_RUN_DIR/keycloak.env" <<EOF
KEYCLOAK_PID=$PID
KEYCLOAK_BASE_URL=$BASE_URL
KEYCLOAK_ISSUER=$ISSUER
KEYCLOAK_JWKS_URL=$ISSUER/protocol/openid-connect/certs
KEYCLOAK_MANAGEMENT_URL=http://127.0.0.1:$KC_MGMT_PORT
KEYCLOAK_ADMIN_USER=$ADMIN_USER
KEYCLOAK_ADMIN_PASSWORD_FILE=$KC_RUN_DIR/admin-password
KEYCLOAK_STARTUP_SECONDS=$elapsed
EOF
kc_log "ready in ${elapsed}s (pid $PID); admin user '$ADMIN_USER', password in $KC_RUN_DIR/admin-password"
kc_log "health: http://127.0.0.1:$KC_MGMT_PORT/health/ready ; stop with deploy/keycloak/stop.sh $KC_RUN_DIR"
echo "$ISSUER"
