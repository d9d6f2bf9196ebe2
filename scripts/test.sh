#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite with CTest.
# The tests start their own MariaDB and HTTP upstreams on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh "$@"
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900
