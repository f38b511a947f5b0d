#!/usr/bin/env bash
# Installs what building and testing qwen.cu needs on a fresh Debian machine (idempotent).
# Set QWEN_SKIP_SETUP=1 to skip (e.g. on the GPU machine, which has no network).
set -euo pipefail
[ "${QWEN_SKIP_SETUP:-0}" = 1 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

debs=(cmake ninja-build pkg-config g++ clang libclang-rt-14-dev python3 python3-pip nlohmann-json3-dev libcpp-httplib-dev
      libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python3 -m pip install -q -r "$here/requirements.txt" 2>&1 | grep -v -i "root user" || true
python3 -c "import gguf, numpy, tokenizers, pytest, jinja2, openai, sentencepiece" ||
  { echo "setup: python packages missing after pip install" >&2; exit 1; }
