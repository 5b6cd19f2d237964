#!/usr/bin/env bash
# Runs `reid-dist bench` and, where a Python with torch is given, the PyTorch
# baseline in the same run:  Cluster/bench.sh [--torch-python PY] [bench args]
set -euo pipefail
cd "$(dirname "$0")/.."
Cluster/setup.sh
exec .build/release/reid-dist bench "$@"
