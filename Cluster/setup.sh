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
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v swift >/dev/null || { echo "setup: swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }

if [ "${1:-}" != "--no-build" ]; then
  swift build -c release 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
  test -x .build/release/reid-dist || { echo "setup: build failed" >&2; exit 1; }
fi
