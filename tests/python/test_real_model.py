"""Real models (scripts/fetch_model.py) on the CPU backend: greedy chat answers are right, and
the logits agree with the independent numpy reference. The default model is a qwen2 (Qwen2.5
0.5B, K-quant mix); SmolLM2-135M covers the llama architecture (normal rope, permuted q/k).

Each model is skipped, with the reason, only when it cannot be fetched (no network, no cache)."""
import subprocess
import sys

import gguf
import numpy as np
import pytest

from conftest import ROOT
from reference import Reference

sys.path.insert(0, str(ROOT / "scripts"))
import fetch_model  # noqa: E402

DEFAULT = fetch_model.default_name()
QUESTIONS = {
    DEFAULT: [("What is the capital of France?", "Paris"),
              ("What is 2 + 3? Answer with just the number.", "5"),
              ("What is the largest planet in the solar system?", "Jupiter")],
    "smollm2-135m": [("What is the capital of France?", "Paris"),
                     ("What is 2 + 3? Answer with just the number.", "5")],
}
# A ChatML prompt spelled as vocabulary entries (byte-level BPE: Ġ is a space, Ċ a newline), so
# both models get a valid token sequence without depending on our tokenizer; a piece missing from
# a vocabulary is split into its longest known prefixes.
PROMPT_TOKENS = ["<|im_start|>", "user", "Ċ", "Name", "Ġthree", "Ġprimary", "Ġcolors", ".", "<|im_end|>", "Ċ",
                 "<|im_start|>", "assistant", "Ċ"]

_paths = {}


def spell(pieces, vocab):
    ids = []
    for piece in pieces:
        while piece:
            n = next(n for n in range(len(piece), 0, -1) if piece[:n] in vocab)
            ids.append(vocab[piece[:n]])
            piece = piece[n:]
    return ids


def model_path(name):
    if name not in _paths:
        try:
            _paths[name] = fetch_model.fetch(name)
        except Exception as e:  # FetchError, pip or network failures: all mean "no model here"
            _paths[name] = e
    if isinstance(_paths[name], Exception):
        pytest.skip(f"model {name} could not be fetched: {_paths[name]}")
    return _paths[name]


@pytest.mark.parametrize("name, question, answer",
                         [(name, q, a) for name, qa in QUESTIONS.items() for q, a in qa])
def test_greedy_chat_answers(bin_dir, name, question, answer):
    model = model_path(name)
    # --exact: the engine's answer in the oracle arithmetic. The fast mode's 8-bit activations can
    # flip a near-tie of a tiny model (SmolLM2-135M Q4_1 starts this answer differently); its
    # accuracy is measured by tests/python/test_cpu_fast.py and docs/BENCHMARKS.md (CPU).
    proc = subprocess.run([str(bin_dir / "qwen-cli"), "-m", str(model), "--device", "cpu", "--chat", "-p",
                           question, "--temp", "0", "-n", "48", "--exact"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert answer in proc.stdout, f"{name}: {question!r} -> {proc.stdout!r}"
    assert "finish: eog" in proc.stderr, proc.stderr  # the model ended its turn by itself


@pytest.mark.parametrize("name", list(QUESTIONS))
def test_top5_logits_match_reference(bin_dir, tmp_path, name):
    """At 4 positions: same top-1, same top-5 set, and max |Δlogit| over the reference's top-5
    <= 0.01 (measured ~2e-4 on the default model; its logits reach ~25)."""
    model = model_path(name)
    vocab = {t: i for i, t in enumerate(gguf.GGUFReader(str(model)).fields["tokenizer.ggml.tokens"].contents())}
    ids = spell(PROMPT_TOKENS, vocab)
    out = tmp_path / "logits.npy"
    proc = subprocess.run([str(bin_dir / "qwen-logits"), "-m", str(model), "--device", "cpu", "--tokens",
                           ",".join(map(str, ids)), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    want = Reference(model, dtype=np.float32).forward(ids)
    for pos in (3, len(ids) // 2, len(ids) - 2, len(ids) - 1):
        top_want = np.argsort(-want[pos])[:5]
        top_got = np.argsort(-got[pos])[:5]
        assert top_got[0] == top_want[0], f"{name} position {pos}: top-1 {top_got[0]} vs reference {top_want[0]}"
        assert set(top_got) == set(top_want), f"{name} position {pos}: top-5 {top_got} vs reference {top_want}"
        err = float(np.abs(got[pos, top_want] - want[pos, top_want]).max())
        assert err <= 0.01, f"{name} position {pos}: max |Δlogit| over top-5 = {err:.3g}"
