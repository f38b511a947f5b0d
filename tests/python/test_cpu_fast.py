"""The CPU backend's fast mode (8-bit activations, qwen-logits --fast) against the exact fp32 oracle
on synthetic models with the real vocabulary, one per weight-type family.

Metric: per position, KL(exact || fast) of the softmaxed logits; the mean over positions must stay
below 1e-3 nats and the top-1 token must agree at >= 90% of positions (random-weight models have
near-ties that 8-bit activations may flip). The exact mode itself is what every other test checks.
"""
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402

PROMPT = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("wtype,n_embd,n_ff", [("Q8_0", 64, 128), ("Q5_0", 64, 128), ("Q4_K", 256, 512),
                                               ("Q6_K", 256, 512)])
def test_fast_logits_close_to_exact(bin_dir, tokenizer_dir, tmp_path, wtype, n_embd, n_ff):
    model = tmp_path / f"tiny-{wtype}.gguf"
    make_model(model, arch="qwen2", n_embd=n_embd, n_layer=2, n_head=4, n_head_kv=2, n_ff=n_ff, n_vocab=151936,
               type=wtype, seed=3, vocab=str(tokenizer_dir / "tokenizer.json"),
               vocab_config=str(tokenizer_dir / "tokenizer_config.json"))
    out = {}
    for mode in ("exact", "fast"):
        path = tmp_path / f"{mode}.npy"
        cmd = [str(bin_dir / "qwen-logits"), "-m", str(model), "--device", "cpu", "--prompt", PROMPT, "-o", str(path)]
        if mode == "fast":
            cmd.append("--fast")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        out[mode] = np.load(path)
    exact, fast = log_softmax(out["exact"]), log_softmax(out["fast"])
    assert exact.shape == fast.shape and exact.shape[0] > 20
    kl = (np.exp(exact) * (exact - fast)).sum(axis=-1)
    top1 = (exact.argmax(-1) == fast.argmax(-1)).mean()
    assert kl.mean() < 1e-3, f"{wtype}: mean KL {kl.mean():.2e}, max {kl.max():.2e}"
    assert top1 >= 0.9, f"{wtype}: top-1 agreement {top1:.2f}"
    assert not np.array_equal(out["exact"], out["fast"]), "--fast gave the exact logits: the flag did nothing"

