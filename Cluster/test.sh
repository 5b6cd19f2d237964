#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs the tests in a
# release build (numeric loops are 10-100x slower in debug builds).
# Extra arguments go to `swift test` (e.g. --filter ProtocolTests).
set -euo pipefail
cd "$(dirname "$0")/.."
Cluster/setup.sh --no-build
# A Python with numpy, onnx and onnxruntime (PyPI; never torch) for the ONNX export
# tests, in a virtual environment outside the repository.
pyenv=${REID_DIST_PYENV:-$HOME/.cache/reid-dist/pyenv}
if ! "$pyenv/bin/python" -c 'import numpy, onnx, onnxruntime' 2>/dev/null; then
  echo "installing numpy, onnx and onnxruntime into $pyenv (for the ONNX export tests)"
  { python3 -m venv "$pyenv" && "$pyenv/bin/pip" install -q numpy "onnx==1.23.2" "onnxruntime==1.32.0"; } \
    || echo "warning: could not install them: the ONNX tests will be skipped (and fail under CI=true)"
fi
export REID_DIST_PYTHON="$pyenv/bin/python"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
swift test -c release -Xswiftc -enable-testing --disable-swift-testing "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# XCTest's overall line: "Executed N tests, with M failures (...)" after 'All tests' (or 'Selected tests').
# (with skips: "Executed N tests, with K tests skipped and M failures"; no summary must not fail the script)
summary=$(grep -E -A1 "Test Suite '(All|Selected) tests' (passed|failed)" "$log" \
  | grep -oE "Executed [0-9]+ tests?, with ([0-9]+ tests? skipped and )?[0-9]+ failures?" | tail -1 || true)
if [ -n "$summary" ]; then
  n=$(echo "$summary" | grep -oE "[0-9]+" | head -1); f=$(echo "$summary" | grep -oE "[0-9]+" | tail -1)
  k=$(echo "$summary" | grep -oE "[0-9]+ tests? skipped" | grep -oE "[0-9]+" || echo 0)
  echo "tests: $((n - f - k)) passed, $k skipped, $f failed"
fi
exit "$status"
