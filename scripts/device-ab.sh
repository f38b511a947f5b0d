#!/usr/bin/env bash
# A/B of two source trees on the GPU machine, in one call: this tree (B) against a baseline copy
# of the sources (A, e.g. `git archive main | tar -x -C .device/base`, carried with the call).
# Builds both at once (half the cores each), runs `ctest -L gpu` on B, then the same per-op and
# end-to-end benchmarks on both, one after the other on the same GPU:
#
#   scripts/device-ab.sh LOGDIR BASE_DIR [build] [tests] [ops] [bench] [ncu] [depth]
#                                                                 (none named: the first four)
#
# LOGDIR receives build-a.log, build-b.log, ctest-gpu.log, ops-a.json, ops-b.json, ops.md (time A
# / time B per row: above 1, B is faster; the apps' fast arithmetic), ops-exact.md (the same for
# the exact arithmetic's decode GEMVs), bench.md (qwen-bench rows of A then B per model) and
# device-ab.txt (one line per phase). ncu (only when named) profiles B's matmul kernels under
# qwen-opbench into ncu-SHAPE-TYPE-N.txt for each "shape:type:tokens" of QWEN_AB_NCU (default the
# 7B Q4_K at 1 and 64 tokens and Q6_K at 1): speed of light, memory workload, occupancy, warp
# states. depth (only when named) runs issue 13's depth bars on B into depth.md: the 0.5B Q8_0
# file's tg128 at depths 0, 8192 and 32768 and x64 (tg64) at depths 0 and 4096, with the KV cache
# in F16 and in Q8_0. Steps start only while enough of QWEN_AB_SECONDS (default 560: a device
# call may run 600) is left, so that the logs of what ran come back.
# QWEN_AB_OPS, QWEN_AB_OPS_EXACT: qwen-opbench flags (defaults: 0.5B and 7B shapes; Q4_K, Q6_K,
# Q8_0, F16 at 1, 16 and 64 tokens; exact: Q6_K, Q8_0, Q4_0 at 1 token);
# QWEN_AB_MODELS: shape:type pairs for qwen-bench (made by scripts/make_model.py --random-blocks
# into QWEN_BENCH_MODELS, default /tmp/qwen-bench-models; the PyPI gguf package from .whl/*.whl).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
[[ $# -ge 2 ]] || { echo "usage: $0 LOGDIR BASE_DIR [build] [tests] [ops] [bench] [ncu] [depth]" >&2; exit 2; }
LOG=$(mkdir -p "$1" && cd "$1" && pwd)
BASE=$(cd "$2" && pwd) || exit 2
shift 2
PHASES=${*:-build tests ops bench}
BUDGET=${QWEN_AB_SECONDS:-560}
JOBS=$(nproc)
MODELS=${QWEN_BENCH_MODELS:-/tmp/qwen-bench-models}
OPS=${QWEN_AB_OPS:---shape 0.5b,7b --type Q4_K,Q6_K,Q8_0,F16 -n 1,16,64 --reps 5}
OPS_EXACT=${QWEN_AB_OPS_EXACT:---shape 0.5b,7b --type Q6_K,Q8_0,Q4_0 -n 1 --reps 5}
AB_MODELS=${QWEN_AB_MODELS:-qwen2.5-7b:Q4_K_M qwen2.5-7b:Q8_0 qwen2.5-0.5b:Q8_0 qwen2.5-0.5b:Q4_K_M}
SUMMARY=$LOG/device-ab.txt
source scripts/device-lib.sh
note "A: $BASE (${QWEN_COMMIT_A:-commit not given}); B: $PWD (${QWEN_COMMIT_B:-commit not given})"

has depth && ! has bench && [[ " $AB_MODELS " != *" qwen2.5-0.5b:Q8_0 "* ]] && AB_MODELS+=" qwen2.5-0.5b:Q8_0"
if has bench || has depth; then start_models "$LOG/models.log" $AB_MODELS; fi

build_tree() {  # build_tree SRC BUILD_DIR
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQWEN_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    "-DCMAKE_CUDA_FLAGS=-Xptxas=-v" &&
    ninja -C "$2" -j $((JOBS / 2)) qwen-bench qwen-opbench ${3:-}
}
builds() {
  build_tree "$BASE" /tmp/ab-a > "$LOG/build-a.log" 2>&1 &
  local pa=$!
  build_tree . /tmp/ab-b all > "$LOG/build-b.log" 2>&1
  local rb=$?
  wait $pa && ((rb == 0))
}
has build && budget_phase build 240 builds

if has tests; then
  budget_phase "ctest -L gpu (B)" 180 ctest --test-dir /tmp/ab-b -L gpu -j 4 --timeout 300 --output-on-failure \
    > "$LOG/ctest-gpu.log" 2>&1
  grep -E "tests passed|tests failed|Total Test time" "$LOG/ctest-gpu.log" 2> /dev/null | tee -a "$SUMMARY"
fi

if has ops; then
  compare() {  # compare A.json B.json: a markdown table of the rows both have
    python3 - "$1" "$2" << 'EOF'
import json, sys
a, b = (json.load(open(p))["rows"] for p in sys.argv[1:3])
key = lambda r: (r["shape"], r["matrix"], r["type"], r["n_tokens"])
ta = {key(r): r for r in a}
print("| shape | matrix | type | n | A us | B us | A/B | B GB/s | B % BW |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for r in b:
    ra = ta.get(key(r))
    if ra:
        print(f"| {r['shape']} | {r['matrix']} | {r['type']} | {r['n_tokens']} | {ra['us']:.1f} | {r['us']:.1f} | "
              f"{ra['us'] / r['us']:.2f} | {r['gbs']:.0f} | {r['gbs_pct']:.1f} |")
EOF
  }
  ops() {
    local side
    for side in a b; do
      /tmp/ab-$side/bin/qwen-opbench $OPS --json > "$LOG/ops-$side.json" &&
        /tmp/ab-$side/bin/qwen-opbench $OPS_EXACT --exact --json > "$LOG/ops-exact-$side.json" || return 1
    done
    compare "$LOG/ops-a.json" "$LOG/ops-b.json" > "$LOG/ops.md" &&
      compare "$LOG/ops-exact-a.json" "$LOG/ops-exact-b.json" > "$LOG/ops-exact.md"
  }
  budget_phase ops 120 ops
fi

if has bench; then
  bench() {
    models_ready || return 1
    local m rc=0 side
    for m in $AB_MODELS; do
      local f
      f=$(model_file "${m%%:*}" "${m##*:}")
      for side in a b; do
        (($(left) > 40)) || { echo "out of time before $m ($side)"; return 1; }
        echo "### $m ($side)"
        /tmp/ab-$side/bin/qwen-bench -m "$f" --device cuda -p 0 -n 128 -r 3 || rc=1
        /tmp/ab-$side/bin/qwen-bench -m "$f" --device cuda -p 0 -n 64 -r 3 -b 16,64 || rc=1
      done
    done
    return $rc
  }
  budget_phase bench 60 bench > "$LOG/bench.md" 2>&1
  grep -E "^###|^\| " "$LOG/bench.md" >> "$SUMMARY"
fi
if has ncu; then
  ncu_all() {
    local e rc=0
    for e in ${QWEN_AB_NCU:-7b:Q4_K:1 7b:Q4_K:64 7b:Q6_K:1}; do
      IFS=: read -r shape type n <<< "$e"
      (($(left) > 60)) || { echo "out of time before $e"; return 1; }
      # Past the warm-up, 6 launches of the matmul kernels (the x split and the like excluded).
      timeout $(($(left) - 30)) ncu --clock-control none -k regex:'gemv|gemm_small' --launch-skip 20 \
        --launch-count 6 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
        --section WarpStateStats --section LaunchStats /tmp/ab-b/bin/qwen-opbench --shape "$shape" \
        --type "$type" -n "$n" --reps 1 > "$LOG/ncu-$shape-$type-$n.txt" 2>&1 || rc=1
    done
    return $rc
  }
  budget_phase ncu 90 ncu_all
fi
if has depth; then
  depth() {
    models_ready || return 1
    local f kv d rc=0
    f=$(model_file qwen2.5-0.5b Q8_0)
    for kv in f16 q8_0; do
      for d in 0 8192 32768; do
        (($(left) > 40)) || { echo "out of time before tg128 at depth $d ($kv)"; return 1; }
        echo "### tg128, depth $d, KV $kv"
        /tmp/ab-b/bin/qwen-bench -m "$f" --device cuda -p 0 -n 128 -d $d -r 3 --kv-type $kv || rc=1
      done
      for d in 0 4096; do
        (($(left) > 40)) || { echo "out of time before x64 at depth $d ($kv)"; return 1; }
        echo "### x64, depth $d, KV $kv"
        /tmp/ab-b/bin/qwen-bench -m "$f" --device cuda -p 0 -n 64 -b 64 -d $d -r 3 --kv-type $kv || rc=1
      done
    done
    return $rc
  }
  budget_phase depth 60 depth > "$LOG/depth.md" 2>&1
  grep -E "^###|^\| " "$LOG/depth.md" >> "$SUMMARY"
fi
exit $status
