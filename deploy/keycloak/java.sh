#!/usr/bin/env bash
# Print the JAVA_HOME that start.sh would use (Java 17+), or exit 1 with the reason.
# Used by server.py / the tests to skip cleanly on machines without Java.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kc_select_java
echo "$JAVA_HOME"
