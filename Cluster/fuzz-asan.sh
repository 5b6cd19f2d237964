#!/usr/bin/env bash
# The fuzz tests (FuzzTests: safetensors, YAML, file names, JPEG headers, torch.save views and
# pickles, list files, configuration values) under AddressSanitizer, in their own build folder
# (.build-asan): an out-of-bounds read or write that a mutated input reaches stops the run with
# ASan's report instead of passing silently. About 3-4 minutes to build, 30 s to run, on 2 cores.
#   Cluster/fuzz-asan.sh [swift test args]
set -euo pipefail
cd "$(dirname "$0")/.."
Cluster/setup.sh --no-build
# Leak reports are off: the toolchain's Foundation keeps a few caches for the process's life
# (7 KB in 90 allocations), which is not what this step looks for. A small quarantine keeps
# the fuzzers' memory bounds meaningful.
export ASAN_OPTIONS="detect_leaks=0:quarantine_size_mb=32:abort_on_error=0:${ASAN_OPTIONS:-}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift test -c release -Xswiftc -enable-testing --sanitize=address --scratch-path .build-asan --disable-swift-testing \
  --filter 'FuzzTests|StructuredFuzzTests|HostileTorchFileTests' "$@" 2>&1 | tee "$log" | grep -vE '^\[[0-9]+/[0-9]+\]'
status=${PIPESTATUS[0]}
set -e
if grep -q "ERROR: AddressSanitizer" "$log"; then
  echo "fuzz-asan: AddressSanitizer found a memory error (report above)" >&2
  exit 1
fi
summary=$(grep -oE "Executed [0-9]+ tests?, with ([0-9]+ tests? skipped and )?[0-9]+ failures?" "$log" | tail -1 || true)
echo "fuzz-asan: ${summary:-no summary} (exit $status)"
exit "$status"
