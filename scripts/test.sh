#!/usr/bin/env bash
# Set-up (packages, data, build) and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_dir=${SHRINK_BUILD_DIR:-build}
# One test binary at a time: each uses both cores (LibTorch threads); running two at once on a
# 2-core machine makes OpenMP threads spin against each other.
ctest --test-dir "$build_dir" --output-on-failure
