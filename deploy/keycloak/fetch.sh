#!/usr/bin/env bash
# Fetch the pinned Keycloak distribution from Maven Central (through `mvn`), verify it and
# unpack it once into the cache folder:
#   ${REFERRAL_CACHE_DIR:-$HOME/.cache/referral}/keycloak/keycloak-<version>/
# Idempotent: does nothing when the distribution is already unpacked and verified.
# Prints the Keycloak home directory on stdout.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ZIP="$KC_CACHE_DIR/keycloak-quarkus-dist-$KC_VERSION.zip"
MARKER="$KC_HOME/.referral-verified"

if [ -f "$MARKER" ] && [ -x "$KC_HOME/bin/kc.sh" ]; then
    echo "$KC_HOME"
    exit 0
fi

command -v unzip >/dev/null 2>&1 || kc_die "unzip is required (apt-get install unzip)"
mkdir -p "$KC_CACHE_DIR"
exec 9>"$KC_CACHE_DIR/.fetch.lock"
flock 9 2>/dev/null || true   # serialize concurrent fetches (flock is optional)
if [ -f "$MARKER" ] && [ -x "$KC_HOME/bin/kc.sh" ]; then
    echo "$KC_HOME"
    exit 0
fi

if [ ! -f "$ZIP" ]; then
    command -v mvn >/dev/null 2>&1 || kc_die "mvn (Apache Maven) is required to fetch Keycloak (apt-get install maven)"
    kc_select_java   # mvn itself needs a JDK
    kc_log "fetching org.keycloak:keycloak-quarkus-dist:$KC_VERSION:zip with mvn (~170 MB)"
    mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
        -Dartifact="org.keycloak:keycloak-quarkus-dist:$KC_VERSION:zip" \
        -DoutputDirectory="$KC_CACHE_DIR.tmp-$$" -Dmdep.overWriteReleases=true >&2 \
        || kc_die "mvn dependency:copy failed"
    mv "$KC_CACHE_DIR.tmp-$$/keycloak-quarkus-dist-$KC_VERSION.zip" "$ZIP.part"
    rmdir "$KC_CACHE_DIR.tmp-$$" 2>/dev/null || true
    mv "$ZIP.part" "$ZIP"
fi

# Verify: the pinned sha256 (for the pinned version) and the sha1 Maven stored beside the
# artifact in the local repository (when present).
actual256="$(sha256sum "$ZIP" | cut -d' ' -f1)"
if [ "$KC_VERSION" = "$KC_PINNED_VERSION" ]; then
    if [ "$actual256" != "$KC_PINNED_SHA256" ]; then
        rm -f "$ZIP"
        kc_die "sha256 mismatch for $ZIP: got $actual256, pinned $KC_PINNED_SHA256 (file removed)"
    fi
else
    kc_log "WARNING: version $KC_VERSION is not the pinned $KC_PINNED_VERSION; only the Maven sha1 is checked"
fi
M2_REPO="${REFERRAL_M2_REPO:-$HOME/.m2/repository}"
SHA1_FILE="$M2_REPO/org/keycloak/keycloak-quarkus-dist/$KC_VERSION/keycloak-quarkus-dist-$KC_VERSION.zip.sha1"
if [ -f "$SHA1_FILE" ]; then
    expected1="$(cut -d' ' -f1 < "$SHA1_FILE" | tr -d '[:space:]')"
    actual1="$(sha1sum "$ZIP" | cut -d' ' -f1)"
    if [ "$expected1" != "$actual1" ]; then
        rm -f "$ZIP"
        kc_die "sha1 mismatch for $ZIP: got $actual1, Maven says $expected1 (file removed)"
    fi
elif [ "$KC_VERSION" != "$KC_PINNED_VERSION" ]; then
    kc_die "cannot verify $ZIP: no pinned sha256 for $KC_VERSION and no $SHA1_FILE"
fi

rm -rf "$KC_HOME" "$KC_HOME.tmp"
mkdir -p "$KC_HOME.tmp"
unzip -q "$ZIP" -d "$KC_HOME.tmp"
mv "$KC_HOME.tmp/keycloak-$KC_VERSION" "$KC_HOME"
rmdir "$KC_HOME.tmp"
echo "$actual256" > "$MARKER"
kc_log "unpacked and verified (sha256 $actual256) in $KC_HOME"
echo "$KC_HOME"
