#!/usr/bin/env bash
# build.sh — installs missing dependencies, then configures and builds into
# build/ (pythiac, the runtime archive, the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
