#!/usr/bin/env bash
# Builds an optimized vitserve and starts the server (port 7860 unless
# PORT or --port says otherwise).  Extra arguments go to `vitserve serve`.
# Usage: scripts/serve.sh [--model google/vit-base-patch16-224|DIR] [...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
exec ./build/release/src/vitserve serve "$@"
