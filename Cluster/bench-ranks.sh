#!/usr/bin/env bash
# Data parallelism on this machine, both configurations measured in one run:
# 1 process whose BLAS uses every core, then N MPI ranks x 1 BLAS thread with
# the bucketed all-reduce, and the ratio of their images/s. The N-rank line also
# gives the share of the all-reduce hidden behind backward.
#   Cluster/bench-ranks.sh [N] [--torch-python PY] [reid-dist bench train args ...]
#   e.g. Cluster/bench-ranks.sh 2 --cases r18w32-128x64-b32 --steps 10
# With --torch-python (a Python that has torch), PyTorch DDP over gloo with the same ranks,
# threads and per-rank batch (Cluster/python/torch_ddp_bench.py, both memory layouts, the
# best kept) is measured in the same run, and the ratio printed.
# Default: N = cores, ResNet-50 256x128 batch 16 per rank, 4 timed steps.
# For figures that represent this CPU: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE Cluster/bench-ranks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc)
n=$cores
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then n=$1; shift; fi
torch_py=""; rest=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--torch-python" ]; then torch_py=${2:?--torch-python needs a python}; shift 2; else rest+=("$1"); shift; fi
done
set -- "${rest[@]+"${rest[@]}"}"
ddp=Cluster/python/torch_ddp_bench.py
if [ -n "$torch_py" ]; then
  [ -x "$torch_py" ] || { echo "bench-ranks.sh: --torch-python $torch_py is not an executable" >&2; exit 2; }
  [ -f "$ddp" ] || { echo "bench-ranks.sh: $ddp not found (the PyTorch DDP baseline)" >&2; exit 2; }
fi
[ "$n" -ge 2 ] || { echo "bench-ranks.sh: N must be at least 2 (got $n)" >&2; exit 2; }
args=(--cases r50-256x128-b16 --steps 4 --no-stages "$@")
Cluster/setup.sh
bin=.build/release/reid-dist
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== 1 process x $cores BLAS threads"
$bin bench train --threads "$cores" "${args[@]}" | tee "$out/one"
echo "== $n ranks x 1 BLAS thread"
flags=(--allow-run-as-root -np "$n" -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 --mca btl self,vader --mca btl_vader_single_copy_mechanism none)
if [ "$n" -gt "$cores" ]; then flags+=(--oversubscribe --bind-to none); else flags+=(--bind-to core); fi
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun "${flags[@]}" $bin bench train --threads 1 "${args[@]}" | tee "$out/ranks"

# Case lines read "<case> b=<batch> <ms> ms/step <images/s> img/s ...".
echo "== $n ranks x 1 thread against 1 process x $cores threads, images/s"
awk 'FNR == NR && $4 == "ms/step" { one[$1] = $5; next }
     $4 == "ms/step" && ($1 in one) { printf "  %-20s %8.2f vs %8.2f  ratio %.2f\n", $1, $5, one[$1], $5 / one[$1] }' "$out/one" "$out/ranks"

if [ -n "$torch_py" ]; then
  echo "== PyTorch DDP (gloo), $n ranks x 1 thread ($ddp)"
  cases=$(awk '$4 == "ms/step" { print $1 }' "$out/ranks")
  for c in $cases; do
    case $c in r50-*) tc=r50 ;; r18w32-*) tc=r18w32 ;; *) echo "  $c: no PyTorch DDP case"; continue ;; esac
    best=0
    for layout in cl nchw; do
      line=$(OMP_NUM_THREADS=1 "$torch_py" "$ddp" --ranks "$n" --threads 1 --case "$tc" --layout "$layout" 2>/dev/null | tail -1) || line=""
      ips=$(echo "$line" | "$torch_py" -c 'import json,sys; print(json.loads(sys.stdin.read())["images_per_second"])' 2>/dev/null || echo 0)
      echo "  $c $layout: $ips img/s"
      best=$(awk -v a="$best" -v b="$ips" 'BEGIN { print (b > a ? b : a) }')
    done
    ours=$(awk -v c="$c" '$1 == c && $4 == "ms/step" { print $5 }' "$out/ranks")
    awk -v c="$c" -v o="$ours" -v t="$best" 'BEGIN { if (t > 0) printf "  %-20s reid-dist %8.2f vs PyTorch DDP %8.2f img/s  ratio %.2f\n", c, o, t, o / t }'
  done
fi
