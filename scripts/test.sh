#!/usr/bin/env bash
# Builds vitserve and runs every test: the dev build (warnings on, CUDA code
# compiled when nvcc exists), then the same tests under ASan + UBSan, then
# the threaded parts (label tsan) under ThreadSanitizer.
# Usage: scripts/test.sh            (from anywhere; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
# Node packages for the client/browser tests (from the committed lock file).
(cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
for preset in dev asan tsan; do
  echo "=== build: $preset"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
done
status=0
for preset in dev asan tsan; do
  echo "=== test: $preset"
  ctest --preset "$preset" || status=1
done
exit $status
