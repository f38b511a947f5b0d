#!/usr/bin/env bash
# qwen.cu and llama.cpp side by side on the GPU machine, on the same files, in one call: builds
# qwen-bench (this tree) and llama-bench (llama.cpp's sources, carried as a folder or a tarball,
# e.g. the vendor/llama.cpp of the llama-cpp-python sdist from PyPI) at once with half the cores
# each, makes random-block models with the real vocabulary (llama.cpp refuses a file without it),
# then runs the same tests in both, llama.cpp with flash attention and every layer on the GPU:
#
#   scripts/device-llama.sh LOGDIR LLAMA_SRC
#
# Tests (QWEN_LLAMA_TESTS, "shape:type:prompt:gen:depth" each, one llama-bench and one qwen-bench
# run per entry, 3 repetitions): by default the 7B Q4_K_M file at pp512, tg128 and pp8192 (issue
# 12's and 13's bars), and the 0.5B Q8_0 file at pp2048, pp8192 and tg128 at depths 0 and 8192.
# LOGDIR receives build-qwen.log, build-llama.log, models.log, bench.md (each test's two result
# tables) and device-llama.txt (one line per phase). Steps start only while enough of
# QWEN_LLAMA_SECONDS (default 560) is left; the PyPI gguf package comes from .whl/*.whl.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
[[ $# -eq 2 ]] || { echo "usage: $0 LOGDIR LLAMA_SRC" >&2; exit 2; }
LOG=$(mkdir -p "$1" && cd "$1" && pwd)
LLAMA_SRC=$2
BUDGET=${QWEN_LLAMA_SECONDS:-560}
JOBS=$(nproc)
MODELS=${QWEN_BENCH_MODELS:-/tmp/qwen-bench-models}
TESTS=${QWEN_LLAMA_TESTS:-qwen2.5-7b:Q4_K_M:512:128:0 qwen2.5-7b:Q4_K_M:8192:0:0 qwen2.5-0.5b:Q8_0:2048:0:0 \
qwen2.5-0.5b:Q8_0:8192:0:0 qwen2.5-0.5b:Q8_0:0:128:0 qwen2.5-0.5b:Q8_0:0:128:8192}
SUMMARY=$LOG/device-llama.txt
source scripts/device-lib.sh
note "qwen.cu: ${QWEN_COMMIT:-commit not given}; llama.cpp: $LLAMA_SRC"

MODEL_VOCAB="$(python3 scripts/tokenizer_data.py)/tokenizer.json"
pairs=()
for e in $TESTS; do pairs+=("$(cut -d: -f1,2 <<< "$e")"); done
start_models "$LOG/models.log" "${pairs[@]}"

build_llama() {
  local src=$LLAMA_SRC
  if [[ -f $src ]]; then
    rm -rf /tmp/llama-src && mkdir -p /tmp/llama-src && tar -xf "$src" -C /tmp/llama-src || return 1
    src=/tmp/llama-src
  fi
  cmake -S "$src" -B /tmp/llama-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF &&
    ninja -C /tmp/llama-build -j $((JOBS / 2)) llama-bench
}
build_qwen() {
  cmake -S . -B /tmp/qwen-build -G Ninja -DCMAKE_BUILD_TYPE=Release -DQWEN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 &&
    ninja -C /tmp/qwen-build -j $((JOBS / 2)) qwen-bench
}
builds() {
  build_llama > "$LOG/build-llama.log" 2>&1 &
  local pl=$!
  build_qwen > "$LOG/build-qwen.log" 2>&1
  local rq=$?
  wait $pl && ((rq == 0))
}
budget_phase build 300 builds

bench() {
  models_ready || return 1
  local e rc=0
  for e in $TESTS; do
    IFS=: read -r shape type p n d <<< "$e"
    local f
    f=$(model_file "$shape" "$type")
    (($(left) > 40)) || { echo "out of time before $e"; return 1; }
    echo "### $shape $type: prompt $p, gen $n, depth $d"
    /tmp/llama-build/bin/llama-bench -m "$f" -ngl 99 -fa 1 -p "$p" -n "$n" -d "$d" -r 3 -o md || rc=1
    /tmp/qwen-build/bin/qwen-bench -m "$f" --device cuda -p "$p" -n "$n" -d "$d" -r 3 || rc=1
  done
  return $rc
}
budget_phase bench 60 bench > "$LOG/bench.md" 2>&1
grep -E "^###|^\| " "$LOG/bench.md" >> "$SUMMARY"
exit $status
