# Shared by the scripts that run on the GPU machine (device-test.sh, device-ab.sh,
# device-llama.sh); sourced after they set SUMMARY (the one-line-per-phase file), PHASES (for has)
# and, for budget_phase, BUDGET (the seconds the call may use). Sourcing empties SUMMARY, installs
# the carried wheels and notes the GPU. A failing phase sets status=1.
status=0

note() { echo "$*" | tee -a "$SUMMARY"; }
has() { [[ " $PHASES " == *" $1 "* ]]; }

# phase NAME COMMAND...: runs it, records pass/FAIL and the seconds it took.
phase() {
  local name=$1 t0=$SECONDS
  shift
  if "$@"; then
    note "$name: pass ($((SECONDS - t0)) s)"
  else
    note "$name: FAIL ($((SECONDS - t0)) s)"
    status=1
  fi
}

# Seconds of BUDGET left since the script started.
left() { echo $((BUDGET - SECONDS)); }
# budget_phase NAME NEED COMMAND...: phase, if NEED seconds are left (else recorded as skipped), so
# that a call ends with the logs of what ran rather than being cut off.
budget_phase() {
  local name=$1 need=$2
  shift 2
  if (($(left) < need)); then
    note "$name: skipped ($(left) s left, needs $need)"
  else
    phase "$name" "$@"
  fi
}

# The PyPI gguf package (for the model makers) from .whl/*.whl when present: the GPU machine
# reaches no registry.
install_wheels() {
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/qwen-site \
      .whl/*.whl && export PYTHONPATH=/tmp/qwen-site${PYTHONPATH:+:$PYTHONPATH}
  fi
}

# Benchmark models (scripts/make_model.py --random-blocks) in MODELS, with the real vocabulary
# when MODEL_VOCAB names a tokenizer.json (llama.cpp needs it). model_file SHAPE TYPE is a model's
# path; start_models LOGFILE SHAPE:TYPE... makes the missing ones in the background, all at once
# (the maker is one numpy thread each; a 7B file takes well under a minute), while the builds run;
# models_ready waits for them once.
model_file() { echo "$MODELS/$1-$2${MODEL_VOCAB:+-vocab}.gguf"; }
make_models() {
  mkdir -p "$MODELS"
  local pids=() m f rc=0 made=" "
  for m in "$@"; do
    f=$(model_file "${m%%:*}" "${m##*:}")
    [[ -f $f || $made == *" $f "* ]] && continue
    made+="$f "
    python3 scripts/make_model.py --preset "${m%%:*}" --type "${m##*:}" --random-blocks \
      ${MODEL_VOCAB:+--vocab "$MODEL_VOCAB"} -o "$f.tmp" > /dev/null && mv "$f.tmp" "$f" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}
start_models() {
  local log=$1
  shift
  make_models "$@" > "$log" 2>&1 &
  models_pid=$!
}
models_status=
models_ready() {
  [[ -n $models_status ]] || { wait "$models_pid"; models_status=$?; }
  [[ $models_status == 0 ]] || { echo "making the benchmark models failed"; return 1; }
}

note_gpu() {
  note "gpu: $(nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader 2>&1)"
}

: > "$SUMMARY"
install_wheels
note_gpu
