"""qwen-logits --device cpu vs the independent numpy reference (tests/python/reference.py).

Tiny synthetic models (scripts/make_model.py) of each architecture x each weight type; the prompt
is 80 tokens, longer than one KV-cache block of the CUDA backend (64). Metric: max |Δlogit| over
all positions and the vocabulary, against the float64 reference computed from the very same
dequantized weights, so the tolerance only covers fp32 accumulation order. Logits are O(1)-O(10).
"""
import subprocess
import sys

import gguf
import numpy as np
import pytest

from conftest import ROOT
from reference import Reference

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402

ARCHS = ["qwen2", "qwen3", "llama"]
TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
         "Q6_K"]
# Max |Δlogit| allowed per weight type. The reference dequantizes with gguf.quants, bit-equal to
# ours, so only fp32 summation order differs: measured max 1.7e-6 (logits up to ~5) for the
# non-K types and Q3_K/Q6_K, 5.2e-6 for Q2_K/Q4_K/Q5_K, whose random blocks give logits up to ~28.
# The bounds leave ~20x room for other CPUs / compilers and are 10x tighter than the 1e-3.
TOLERANCE = {t: 1e-4 for t in TYPES} | {t: 2e-4 for t in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]}
N_TOKENS = 80

# Shapes: 256-wide rows so every type (K-quants: 256-element blocks) applies; GQA 4:2 (qwen3
# 8:2 with head_dim 64, so key_length != n_embd / n_head as in real Qwen3).
SHAPES = {
    "qwen2": dict(n_head=4, n_head_kv=2),
    "qwen3": dict(n_head=8, n_head_kv=2, head_dim=64),
    "llama": dict(n_head=4, n_head_kv=2),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    cache = {}

    def get(arch, wtype, **extra):
        key = (arch, wtype, tuple(sorted(extra.items())))
        if key not in cache:
            path = d / f"{arch}-{wtype}-{len(cache)}.gguf"
            make_model(path, arch=arch, type=wtype, n_embd=256, n_layer=2, n_ff=512, n_vocab=512, seed=7,
                       **(SHAPES[arch] | extra))
            cache[key] = path
        return cache[key]

    return get


def run_logits(bin_dir, model, tokens, out, *extra):
    cmd = [str(bin_dir / "qwen-logits"), "-m", str(model), "--tokens", ",".join(map(str, tokens)),
           "-o", str(out), "--device", "cpu", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return np.load(out)


def prompt(n_vocab, n=N_TOKENS, seed=3):
    return np.random.default_rng(seed).integers(0, n_vocab, n).tolist()


@pytest.mark.parametrize("wtype", TYPES)
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_reference(bin_dir, models, tmp_path, arch, wtype):
    model = models(arch, wtype)
    tokens = prompt(512)
    got = run_logits(bin_dir, model, tokens, tmp_path / "logits.npy")
    want = Reference(model).forward(tokens)
    assert got.shape == (N_TOKENS, 512) and got.dtype == np.float32
    err = float(np.abs(got - want).max())
    assert err <= TOLERANCE[wtype], f"{arch} {wtype}: max |Δlogit| = {err:.3g} > {TOLERANCE[wtype]}"


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_q8_0_kv_cache_matches_gguf_quantize(bin_dir, models, tmp_path, arch):
    """--kv-type q8_0 vs the reference whose K (after rope) and V go through the PyPI gguf package's
    Q8_0 quantize + dequantize: max |Δlogit| <= 5e-4 (measured 6.8e-5 qwen2, 8.6e-7 qwen3: fp32 vs fp64
    k may move a block's rounding), while Q8_0 storage itself moves the logits by >= 1e-2 (measured
    0.022, 0.021), so the bound tells gguf's rounding apart from exact K/V. F32 weights, head_dim 64
    (two blocks per head). (F16/BF16 caches are plain conversions: checked exactly in
    tests/unit/test_cpu_backend.cpp; here their last-bit roundings flip too often to bound tighter
    than their own effect.)"""
    model = models(arch, "F32", n_head=4, n_head_kv=2, head_dim=64)
    tokens = prompt(512)
    got = run_logits(bin_dir, model, tokens, tmp_path / "logits.npy", "--kv-type", "q8_0")
    ref = Reference(model)
    exact = ref.forward(tokens)
    ref.kv_type = gguf.GGMLQuantizationType.Q8_0
    want = ref.forward(tokens)
    err, effect = float(np.abs(got - want).max()), float(np.abs(want - exact).max())
    assert err <= 5e-4 and effect >= 1e-2, f"{arch}: max |Δlogit| {err:.3g}, Q8_0's own effect {effect:.3g}"


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_equals_single_steps(bin_dir, models, tmp_path, arch):
    """N tokens in one forward vs N one-token forwards through the KV cache: max |Δ| <= 1e-4."""
    model = models(arch, "Q8_0")
    tokens = prompt(512)
    batch = run_logits(bin_dir, model, tokens, tmp_path / "batch.npy")
    step = run_logits(bin_dir, model, tokens, tmp_path / "step.npy", "--step")
    err = float(np.abs(batch - step).max())
    assert err <= 1e-4, f"{arch}: prefill vs step max |Δlogit| = {err:.3g}"


def test_tied_output_embedding(bin_dir, models, tmp_path):
    """No output.weight: the lm_head is token_embd (F32, max |Δ| <= 1e-3)."""
    model = models("qwen2", "F32", tied=True)
    tokens = prompt(512, n=20)
    got = run_logits(bin_dir, model, tokens, tmp_path / "logits.npy")
    err = float(np.abs(got - Reference(model).forward(tokens)).max())
    assert err <= 1e-3, f"tied output: max |Δlogit| = {err:.3g}"


def test_dump_intermediates_match_reference(bin_dir, models, tmp_path):
    """--dump writes named intermediates; those the reference also names agree to 1e-4; kernels.tsv
    names the kernel that wrote each of them (exactly: "cpu" on this backend, which runs ops as
    issued)."""
    model = models("qwen3", "F32")
    tokens = prompt(512, n=12)
    dump = tmp_path / "dump"
    run_logits(bin_dir, model, tokens, tmp_path / "logits.npy", "--dump", str(dump))
    taps = {}
    Reference(model).forward(tokens, taps)
    names = {p.stem for p in dump.glob("*.npy")}
    assert {"inp_embd", "L00.attn_norm", "L01.Qcur_normed", "L01.l_out", "result_output"} <= names
    kernels = dict(line.split("\t") for line in (dump / "kernels.tsv").read_text().splitlines())
    assert set(kernels) == names and set(kernels.values()) == {"cpu"}
    for name, want in taps.items():
        got = np.load(dump / f"{name}.npy")
        assert got.shape == want.shape, name
        err = float(np.abs(got - want).max())
        assert err <= 1e-4, f"{name}: max |Δ| = {err:.3g}"


def test_bad_token_id_is_a_clear_error(bin_dir, models, tmp_path):
    model = models("qwen2", "F32")
    proc = subprocess.run([str(bin_dir / "qwen-logits"), "-m", str(model), "--tokens", "1,512",
                           "-o", str(tmp_path / "x.npy"), "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "token id 512 is outside the vocabulary" in proc.stderr
