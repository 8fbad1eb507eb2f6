#!/usr/bin/env bash
# Stop the Keycloak started by start.sh, through its pid file.
#
#   deploy/keycloak/stop.sh [RUN_DIR]     (default $REFERRAL_KEYCLOAK_RUN_DIR or <repo>/.data/keycloak)
#
# Sends SIGTERM to the server's process group (start.sh runs it under setsid), waits up to
# REFERRAL_KEYCLOAK_STOP_TIMEOUT seconds (default 20), then SIGKILL. Exit 0 also when it
# was not running.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ $# -ge 1 ]; then KC_RUN_DIR="$1"; fi
PID_FILE="$KC_RUN_DIR/keycloak.pid"
TIMEOUT="${REFERRAL_KEYCLOAK_STOP_TIMEOUT:-20}"

if [ ! -f "$PID_FILE" ]; then
    kc_log "not running (no $PID_FILE)"
    exit 0
fi
PID="$(tr -dc '0-9' < "$PID_FILE")"
if ! kc_pid_alive "$PID"; then
    kc_log "not running (stale pid file, pid ${PID:-?})"
    rm -f "$PID_FILE"
    exit 0
fi

# Only ever signal the process we started: its pid is its process-group id (setsid).
signal_group() {
    kill "-$1" -- "-$PID" 2>/dev/null || kill "-$1" "$PID" 2>/dev/null || true
}

signal_group TERM
for _ in $(seq 1 $((TIMEOUT * 5))); do
    kc_pid_alive "$PID" || break
    sleep 0.2
done
if kc_pid_alive "$PID"; then
    kc_log "still running after ${TIMEOUT}s, sending SIGKILL"
    signal_group KILL
    sleep 0.5
fi
rm -f "$PID_FILE"
kc_log "stopped (pid $PID)"
