#!/usr/bin/env bash
# demo.sh [MODEL_DIR] [-- pythia_gen options]
# Builds everything, compiles MODEL_DIR into ./pythia_gen and generates text.
# Without MODEL_DIR it generates a synthetic model of the pythia-160m shape
# (seeded random weights, so the text is gibberish; with the real GPT-NeoX
# tokenizer from ../shared/tokenizer when it is there) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
model="${1:-}"
[ "$model" = "--" ] && model=""
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
if [ -z "$model" ]; then
  model=models/demo-160m
  echo "demo.sh: no model folder given: using a synthetic pythia-160m-shaped model with random weights in $model" >&2
  if [ ! -f "$model/config.json" ]; then
    tok=()
    [ -f ../shared/tokenizer/tokenizer.json ] && tok=(--tokenizer ../shared/tokenizer/tokenizer.json)
    /usr/bin/python3 examples/gen_model.py "$model" --preset pythia-160m --seed 1 "${tok[@]}"
  fi
fi
echo "demo.sh: compiling $model" >&2
time build/pythiac --target=native -o pythia_gen "$model"
./pythia_gen --info | head -6
if [ $# -eq 0 ]; then
  if ./pythia_gen --info | grep -q "tokenizer:    compiled in"; then
    set -- -p "The capital of France is" -n 32 --temp 0
  else
    set -- --ids 510,5347,273,6181,310 -n 32 --temp 0
  fi
fi
./pythia_gen "$@"
