#!/usr/bin/env bash
# The main job end to end on built-in synthetic data: set-up, synthetic
# Market-1501-layout data, training with Configs/debug.yaml, evaluation.
#   Cluster/run.sh [extra --set key=value ...]   (passed to train and evaluate)
set -euo pipefail
cd "$(dirname "$0")/.."
Cluster/setup.sh
bin=.build/release/reid-dist
[ -d synth/market/bounding_box_train ] || $bin synth --layout market --out synth/market
$bin train --config Configs/debug.yaml --resume auto "$@"
$bin evaluate --config Configs/debug.yaml --checkpoint runs/debug "$@" --json runs/debug/evaluation.json
