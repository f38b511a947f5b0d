#!/usr/bin/env bash
# Builds the GGUF reader's libFuzzer target with clang in BUILD_DIR and runs it for SECONDS
# (default 60) from a generated seed corpus. Exits non-zero when the fuzzer finds a crash, a
# sanitizer report or a leak; the reproducer is left in BUILD_DIR/fuzz-artifacts/.
# Usage: tests/fuzz/run.sh BUILD_DIR [SECONDS]
set -euo pipefail

build=${1:?usage: tests/fuzz/run.sh BUILD_DIR [SECONDS]}
seconds=${2:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQWEN_CUDA=OFF -DQWEN_FUZZ=ON -DBUILD_TESTING=ON >/dev/null
ninja -C "$build" qwen_fuzz_gguf

seeds="$build/fuzz-seeds"
corpus="$build/fuzz-corpus"   # grows across runs in the same BUILD_DIR
artifacts="$build/fuzz-artifacts"
mkdir -p "$corpus" "$artifacts"
python3 "$root/tests/fuzz/make_seeds.py" "$seeds"

"$build/bin/qwen_fuzz_gguf" "$corpus" "$seeds" \
  -dict="$root/tests/fuzz/gguf.dict" -max_total_time="$seconds" -max_len=65536 \
  -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/"
