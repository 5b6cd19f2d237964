#!/usr/bin/env bash
# Installs what reid-dist needs on a Debian machine (idempotent, quiet when
# everything is there) and builds the release binary.
#   Cluster/setup.sh            install + build
#   Cluster/setup.sh --no-build install only
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(libopenblas-dev libopenmpi-dev openmpi-bin libjpeg62-turbo-dev libpng-dev pkg-config)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  log=$(mktemp)
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "setup: installing ${missing[*]} failed (its last lines above)" >&2
    exit 1
  fi
  rm -f "$log"
fi

command -v swift >/dev/null || { echo "setup: swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }

if [ "${1:-}" != "--no-build" ]; then
  # A failed build stops here with its last lines: never run a stale binary from an earlier build.
  log=$(mktemp)
  if ! swift build -c release >"$log" 2>&1; then
    grep -vE '^\[[0-9]+/[0-9]+\]' "$log" | tail -30 >&2
    echo "setup: 'swift build -c release' failed (its last lines above); .build/release/reid-dist is not up to date" >&2
    rm -f "$log"
    exit 1
  fi
  grep -vE '^\[[0-9]+/[0-9]+\]' "$log" || true
  rm -f "$log"
  test -x .build/release/reid-dist || { echo "setup: the build left no .build/release/reid-dist" >&2; exit 1; }
fi
