#!/usr/bin/env bash
# test.sh — installs missing dependencies, builds, runs the whole test suite
# (ctest).  Tests that need ../shared/tokenizer skip with a message when it
# is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure -j1 --timeout 1500
