#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs the tests in a
# release build (numeric loops are 10-100x slower in debug builds).
set -euo pipefail
cd "$(dirname "$0")/.."
Cluster/setup.sh --no-build
swift test -c release -Xswiftc -enable-testing "$@"
