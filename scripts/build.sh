#!/usr/bin/env bash
# Configures and builds qwen.cu into ${BUILD_DIR:-build}. CUDA is built when nvcc is found;
# without a local GPU the default architecture is sm_90 (override with CMAKE_CUDA_ARCHITECTURES).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${QWEN_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$jobs"
