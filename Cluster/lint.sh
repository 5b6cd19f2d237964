#!/usr/bin/env bash
# The Swift sources in the project's format (.swift-format: 4 spaces, lines of 120, one statement
# a line), checked as CI checks them; with --fix, rewritten in place first.
#   Cluster/lint.sh [--fix]
# The generated onnx.pb.swift is left as swift-protobuf writes it.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find Sources Tests -name '*.swift' ! -name 'onnx.pb.swift' | sort)
files+=(Package.swift)
if [ "${1:-}" = "--fix" ]; then swift format -i --configuration .swift-format "${files[@]}"; fi
if ! swift format lint --strict --configuration .swift-format "${files[@]}"; then
  echo "lint.sh: the sources differ from .swift-format's format; Cluster/lint.sh --fix rewrites them" >&2
  exit 1
fi
echo "lint: ${#files[@]} files in format"
