#!/usr/bin/env bash
# Data-parallel training on this machine:  Cluster/run-local.sh N CONFIG [train args ...]
# mpirun with what one machine needs: root allowed, oversubscription when N
# exceeds the cores, ranks bound to cores when they fit, one BLAS thread per
# rank when ranks fill the cores (train.threads 0 divides the cores among ranks).
# Paths (the config, data.root, train.run_dir) are relative to where it is run, as with
# reid-dist itself; the binary is the repository's unless REID_DIST_BIN names another.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 2 ] || { echo "usage: Cluster/run-local.sh N CONFIG [train args ...]" >&2; exit 2; }
n=$1; config=$2; shift 2
[ -f "$config" ] || { echo "run-local.sh: $config: no such config file" >&2; exit 2; }
bin=${REID_DIST_BIN:-$root/.build/release/reid-dist}
[ -x "$bin" ] || "$root/Cluster/setup.sh"
cores=$(nproc)
flags=(--allow-run-as-root -np "$n" -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1)
if [ "$n" -gt "$cores" ]; then flags+=(--oversubscribe --bind-to none); else flags+=(--bind-to core); fi
# Keep Open MPI on this host: shared memory between local ranks, no network probing.
flags+=(--mca btl self,vader --mca btl_vader_single_copy_mechanism none)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Open MPI prints its own banners after a rank's error: the first rank's one-line error is
# repeated as the last line, so that it is what the user sees.
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
set +e
mpirun "${flags[@]}" "$bin" train --config "$config" "$@" 2> >(tee "$errors" >&2)
status=$?
set -e
wait   # for tee
if [ "$status" -ne 0 ]; then
  first=$(grep -m1 -E '^rank [0-9]+: error: ' "$errors" || true)
  [ -n "$first" ] && echo "run-local.sh: job failed (exit $status); first error: $first" >&2
fi
exit "$status"
