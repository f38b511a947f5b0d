#!/usr/bin/env bash
# Sets up, builds, fetches the default model once (cached in ${QWEN_CACHE:-~/.cache/qwen.cu}) and
# runs qwen-cli on it. Extra arguments go to qwen-cli, e.g. scripts/run.sh -p "Hello" -n 64.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >&2
bash scripts/build.sh >&2
model="$(python3 scripts/fetch_model.py)"
if [ $# -eq 0 ]; then
  set -- --chat -p "What is the capital of France? Answer in one sentence." -n 64
fi
exec "${BUILD_DIR:-build}/bin/qwen-cli" -m "$model" "$@"
