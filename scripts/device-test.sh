#!/usr/bin/env bash
# The GPU machine's test run (issue 5): configure with ninja, build on every core, run the ctest
# label `gpu` (CUDA vs CPU parity), the transformers comparison (scripts/hf_compare.py) and the
# benchmarks (qwen-bench on the Qwen2.5-0.5B and 7B shapes in F16, Q8_0, Q4_0, Q4_K_M and Q6_K by
# default: QWEN_BENCH_SHAPES and QWEN_BENCH_TYPES choose), writing logs into LOGDIR.
#
#   scripts/device-test.sh LOGDIR [build] [tests] [hf] [bench] [serve] [ops] [soak]   (none named: the first five)
#
# LOGDIR receives at most 10 files: build.log, ctest-gpu.log, hf_compare.log, hf_compare.json,
# hf_compare.md, bench.md (qwen-bench, then the server's streams), bench.json, ops.md, soak.md,
# device-test.txt (one line per phase with its status).
# ops (only when named): qwen-opbench, the matmul of every Qwen2.5 matrix shape x weight type x
# token count alone, into ops.md (docs/BENCHMARKS.md); QWEN_OPBENCH_ARGS passes it flags.
# serve: qwen-server with 64 slots on the benchmark models, aggregate tok/s of 1/8/32/64 streams
# (apps/server/bench_server.py).
# soak (only when named): qwen-server --parallel 64 on the 0.5B Q8_0 model under apps/server/soak.py
# (64 streaming clients with cancellations and bad requests, RSS and GPU memory flatness) for
# QWEN_SOAK_SECONDS (default 600), into soak.md. The servers need cpp-httplib, which the GPU machine lacks: point
# CMake at a carried copy with QWEN_CMAKE_ARGS=-Dhttplib_DIR=... and its libraries with
# QWEN_SERVER_LIBS=DIR; the models then need the real vocabulary: QWEN_VOCAB=tokenizer.json.
# The PyPI gguf package (for the model makers) is installed from .whl/*.whl when present, since
# the GPU machine cannot reach a registry. Exit status: 0 only if every phase run passed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
[[ $# -ge 1 ]] || { echo "usage: $0 LOGDIR [build] [tests] [hf] [bench] [serve] [ops] [soak]" >&2; exit 2; }
LOG=$(mkdir -p "$1" && cd "$1" && pwd)
shift
PHASES=${*:-build tests hf bench serve}
BUILD=${QWEN_BUILD_DIR:-build-gpu}
JOBS=${QWEN_JOBS:-$(nproc)}
MODELS=${QWEN_BENCH_MODELS:-/tmp/qwen-bench-models}
BENCH_SHAPES=${QWEN_BENCH_SHAPES:-qwen2.5-0.5b qwen2.5-7b}
BENCH_TYPES=${QWEN_BENCH_TYPES:-F16 Q8_0 Q4_0 Q4_K_M Q6_K}
SUMMARY=$LOG/device-test.txt
source scripts/device-lib.sh
# The device's copy of the tree has no .git: the caller may name the commit in QWEN_COMMIT.
note "commit: ${QWEN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"

# The soak alone needs one model: skip making the others (the 7B files take minutes and disk).
has bench || has serve || BENCH_SHAPES=qwen2.5-0.5b BENCH_TYPES=Q8_0
MODEL_VOCAB=${QWEN_VOCAB:-}
if has bench || has serve || has soak; then
  pairs=()
  for s in $BENCH_SHAPES; do
    for t in $BENCH_TYPES; do pairs+=("$s:$t"); done
  done
  start_models "$LOG/bench.md" "${pairs[@]}"
fi

build() {
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQWEN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90} "-DCMAKE_CUDA_FLAGS=-Xptxas=-v" ${QWEN_CMAKE_ARGS:-} &&
    ninja -C "$BUILD" -j "$JOBS" -k 0  # keep going: one broken target must not hide the others
}
has build && phase build build > "$LOG/build.log" 2>&1

if has tests; then
  phase "ctest -L gpu" ctest --test-dir "$BUILD" -L gpu -j 4 --timeout 600 --output-on-failure \
    > "$LOG/ctest-gpu.log" 2>&1
  grep -E "tests passed|tests failed|Total Test time" "$LOG/ctest-gpu.log" | tee -a "$SUMMARY"
fi

if has hf; then
  phase "hf_compare" env PYTHONUNBUFFERED=1 python3 scripts/hf_compare.py --bin "$BUILD/bin" --out "$LOG" \
    > "$LOG/hf_compare.log" 2>&1
  [[ -f $LOG/hf_compare.md ]] && cat "$LOG/hf_compare.md" | tee -a "$SUMMARY"
fi

if has bench; then
  bench() {
    models_ready || return 1
    local rc=0
    echo "[" > "$LOG/bench.json"
    local first=1
    local s t
    for s in $BENCH_SHAPES; do
      for t in $BENCH_TYPES; do
        local m
        m=$(model_file "$s" "$t")
        echo "### $s $t"
        "$BUILD/bin/qwen-bench" -m "$m" --device cuda -p 512 -n 128 -r ${QWEN_BENCH_REPS:-5} || rc=1
        [[ $first == 1 ]] || echo "," >> "$LOG/bench.json"
        first=0
        "$BUILD/bin/qwen-bench" -m "$m" --device cuda -p 512 -n 128 -r ${QWEN_BENCH_REPS:-5} --json \
          >> "$LOG/bench.json" || rc=1
      done
    done
    echo "]" >> "$LOG/bench.json"
    return $rc
  }
  phase "bench" bench >> "$LOG/bench.md" 2>&1
  grep -E "^\| |^gpu" "$LOG/bench.md" | tee -a "$SUMMARY"
fi

# start_server PORT LOGFILE ARGS...: qwen-server with ARGS on 127.0.0.1:PORT in the background
# (server_pid), then waits until /health answers; fails at once if the server exits (a model that
# does not load, say) and after 2 minutes otherwise.
start_server() {
  local port=$1 logfile=$2
  shift 2
  LD_LIBRARY_PATH=${QWEN_SERVER_LIBS:-} "$BUILD/bin/qwen-server" "$@" --port "$port" > "$logfile" 2>&1 &
  server_pid=$!
  python3 -c "
import os, sys, time, urllib.request
for _ in range(240):
    try:
        urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1); sys.exit(0)
    except Exception:
        os.kill($server_pid, 0)  # raises once the server has exited
        time.sleep(0.5)
sys.exit(1)" 2> /dev/null || { echo "qwen-server did not become healthy"; return 1; }
}

if has serve; then
  serve() {
    models_ready || return 1
    local rc=0 port=8199 t
    for t in ${QWEN_SERVE_TYPES:-Q8_0 F16}; do
      echo "### qwen-server --parallel 64, $t"
      if start_server $port "/tmp/qwen-server-$t.log" -m "$(model_file qwen2.5-0.5b "$t")" --device cuda \
        --parallel 64 -c 320; then
        python3 apps/server/bench_server.py --url http://127.0.0.1:$port --streams 1,8,32,64 || rc=1
      else
        rc=1
      fi
      kill $server_pid; wait $server_pid
      tail -n 5 "/tmp/qwen-server-$t.log"
    done
    return $rc
  }
  phase "serve" serve >> "$LOG/bench.md" 2>&1
  sed -n '/### qwen-server/,$p' "$LOG/bench.md" | tee -a "$SUMMARY"
fi

if has soak; then
  soak() {
    models_ready || return 1
    local rc=0 port=8198 secs=${QWEN_SOAK_SECONDS:-600}
    local warmup=$((secs / 10 < 60 ? secs / 10 : 60))  # memory baseline after the first tenth, at most 60 s
    echo "### qwen-server --parallel 64, Q8_0: soak for $secs s"
    if start_server $port /tmp/qwen-server-soak.log -m "$(model_file qwen2.5-0.5b Q8_0)" --device cuda \
      --parallel 64 -c 1024; then
      python3 apps/server/soak.py --url http://127.0.0.1:$port --server-pid $server_pid --clients 64 \
        --duration "$secs" --warmup $warmup --prompt-tokens 512 --max-tokens 256 || rc=1
    else
      rc=1
    fi
    kill $server_pid; wait $server_pid || { echo "qwen-server exited with status $?"; rc=1; }
    tail -n 5 /tmp/qwen-server-soak.log
    return $rc
  }
  phase "soak" soak > "$LOG/soak.md" 2>&1
  sed -n '/^## Soak/,/^| GPU memory/p' "$LOG/soak.md" | tee -a "$SUMMARY"
fi

if has ops; then
  phase "ops" "$BUILD/bin/qwen-opbench" ${QWEN_OPBENCH_ARGS:-} > "$LOG/ops.md" 2>&1
fi
exit $status
