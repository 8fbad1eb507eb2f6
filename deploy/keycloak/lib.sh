# shellcheck shell=bash
# Shared settings and helpers for fetch.sh / start.sh / stop.sh. Sourced, not executed.
#
# Everything here is for the LOCAL DEVELOPMENT / TEST Keycloak only (start-dev, in-memory
# H2 database, demo realm with demo passwords). Production runs Keycloak differently.

# Pinned distribution. Change all three together (sha256 of the zip from Maven Central).
KC_VERSION="${REFERRAL_KEYCLOAK_VERSION:-26.7.3}"
KC_PINNED_VERSION="26.7.3"
KC_PINNED_SHA256="27a6535553c3cdcd083872ba40629efafb3475e3b758e0c6f691395561dd0f1f"
KC_MIN_JAVA=17

KC_DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KC_REPO_DIR="$(cd "$KC_DEPLOY_DIR/../.." && pwd)"
KC_CACHE_DIR="${REFERRAL_CACHE_DIR:-$HOME/.cache/referral}/keycloak"
KC_HOME="$KC_CACHE_DIR/keycloak-$KC_VERSION"
KC_REALM="referral"

KC_PORT="${REFERRAL_KEYCLOAK_PORT:-8081}"
KC_MGMT_PORT="${REFERRAL_KEYCLOAK_MANAGEMENT_PORT:-$((KC_PORT + 1000))}"
KC_RUN_DIR="${REFERRAL_KEYCLOAK_RUN_DIR:-$KC_REPO_DIR/.data/keycloak}"

# Build-time options: every start must pass exactly these, otherwise Keycloak re-augments
# itself (~20 s extra) on the next start. dev-mem: in-memory H2, nothing survives a stop.
KC_BUILD_OPTS=(--db=dev-mem --health-enabled=true)

kc_die() {
    echo "keycloak: ERROR: $*" >&2
    exit 1
}

kc_log() {
    echo "keycloak: $*" >&2
}

# Prints the major Java version of "$1/bin/java" (empty if it cannot be run).
kc_java_major() {
    local java="$1/bin/java" v
    [ -x "$java" ] || return 0
    v="$("$java" -XshowSettings:properties -version 2>&1 \
        | sed -n 's/^ *java\.specification\.version = *//p' | head -n1)"
    case "$v" in
        1.*) echo "${v#1.}" | cut -d. -f1 ;;
        *) echo "${v%%.*}" ;;
    esac
}

# Picks a JAVA_HOME with Java >= KC_MIN_JAVA and exports it. Order:
#   1. REFERRAL_JAVA_HOME (if set it must be suitable, no fallback),
#   2. JAVA_HOME, 3. the `java` on PATH,
#   4. /usr/lib/jvm/*, /opt/java/*, /usr/local/lib/jvm/*: the NEWEST suitable one.
# Newer JVMs start Keycloak faster, so among the installed JDKs the newest wins; JAVA_HOME
# and PATH are only used when nothing newer is installed in the standard places.
kc_select_java() {
    local cand major best="" best_major=0
    if [ -n "${REFERRAL_JAVA_HOME:-}" ]; then
        major="$(kc_java_major "$REFERRAL_JAVA_HOME")"
        if [ -z "$major" ] || [ "$major" -lt "$KC_MIN_JAVA" ]; then
            kc_die "REFERRAL_JAVA_HOME=$REFERRAL_JAVA_HOME is not a Java $KC_MIN_JAVA+ installation"
        fi
        export JAVA_HOME="$REFERRAL_JAVA_HOME"
        unset JAVA
        return 0
    fi
    local candidates=()
    [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
    if command -v java >/dev/null 2>&1; then
        candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
    fi
    for cand in /usr/lib/jvm/* /opt/java/* /usr/local/lib/jvm/*; do
        [ -d "$cand" ] && candidates+=("$cand")
    done
    for cand in "${candidates[@]}"; do
        major="$(kc_java_major "$cand")"
        [ -n "$major" ] || continue
        if [ "$major" -ge "$KC_MIN_JAVA" ] && [ "$major" -gt "$best_major" ]; then
            best="$cand"
            best_major="$major"
        fi
    done
    if [ -z "$best" ]; then
        kc_die "no Java $KC_MIN_JAVA or newer found (looked at REFERRAL_JAVA_HOME, JAVA_HOME, PATH, /usr/lib/jvm, /opt/java). Install e.g. 'apt-get install openjdk-17-jre-headless' or set REFERRAL_JAVA_HOME."
    fi
    export JAVA_HOME="$best"
    unset JAVA
}

# GET a URL; succeed if it answers 2xx. Uses curl, falls back to python3.
kc_http_ok() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 5 "$1" 2>/dev/null
    else
        python3 - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5).read()
EOF
    fi
}

kc_pid_alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null
}
