#!/usr/bin/env bash
# The main job end to end on built-in synthetic data: set-up, synthetic
# Market-1501-layout data, data-parallel training with 2 MPI ranks
# (Configs/debug.yaml), then the cluster evaluation with 2 ranks.
#   Cluster/run.sh [--set key=value ...]     (passed to train and evaluate)
# The single-node debug mode of the same job, with no launcher:
#   .build/release/reid-dist train --config Configs/debug.yaml
#   .build/release/reid-dist train --config Configs/debug.yaml --simulate-ranks 2   # what 2 ranks compute
set -euo pipefail
cd "$(dirname "$0")/.."
Cluster/setup.sh
bin=.build/release/reid-dist
[ -d synth/market/bounding_box_train ] || $bin synth --layout market --out synth/market
Cluster/run-local.sh 2 Configs/debug.yaml --resume auto "$@"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --allow-run-as-root -np 2 -x OPENBLAS_NUM_THREADS=1 --mca btl self,vader --mca btl_vader_single_copy_mechanism none \
  $bin evaluate --config Configs/debug.yaml --checkpoint runs/debug "$@" --json runs/debug/evaluation.json
