"""scripts/hf_compare.py's mappings, checked without torch (the comparison itself runs on the GPU
machine, or with --device cpu where torch and transformers are installed): each --rope-scaling
spec becomes the GGUF keys qwen.cu reads and transformers' rope_scaling of the same model; the
GGUF written for a llama model loads in qwen.cu with the trained context the spec implies; too
many positions are refused before anything is built."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import hf_compare_model as hm  # noqa: E402
from make_model import llama3_rope_freqs  # noqa: E402

import gguf  # noqa: E402


@pytest.mark.parametrize("spec, hf, keys, ctx, ctx_max", [
    ("none", {"rope_type": "default"}, {}, 32768, 32768),
    ("linear:4", {"rope_type": "linear", "factor": 4.0}, {"type": "linear", "factor": 4.0}, 32768, 131072),
    ("yarn:4:8192", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192},
     {"type": "yarn", "factor": 4.0, "original_context_length": 8192}, 8192, 32768),
    ("yarn:4", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
     {"type": "yarn", "factor": 4.0, "original_context_length": 32768}, 32768, 131072),
    ("llama3", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}, {}, 65536, 65536),
])
def test_rope_spec_maps_to_transformers_and_gguf(spec, hf, keys, ctx, ctx_max):
    """Exact equality of the transformers entries, the GGUF keys, context_length and the positions
    qwen.cu accepts (factor x original for linear and yarn, as src/model/config.cpp computes)."""
    rope = hm.parse_rope(spec)
    assert (rope.hf, rope.gguf_keys, rope.gguf_ctx, rope.ctx_max) == (hf, keys, ctx, ctx_max)
    # transformers 4 derives YaRN's factor as max_position_embeddings / original: they must agree.
    if hf["rope_type"] == "yarn":
        assert rope.hf_max_pos == hf["factor"] * hf["original_max_position_embeddings"]


@pytest.mark.parametrize("spec", ["yarn", "yarn:0.5", "yarn:4:0", "linear", "linear:2:3", "llama3:8:1:4",
                                  "llama3:8:4:1:8192", "ntk:2", "yarn:x"])
def test_bad_rope_spec_is_refused(spec):
    with pytest.raises(ValueError, match="--rope-scaling"):
        hm.parse_rope(spec)


def test_llama_qk_rows_round_trip():
    """to_gguf_rows puts the two members of each rotary pair on adjacent rows (llama.cpp's order)
    and from_gguf_rows undoes it exactly."""
    n_head, head_dim, cols = 3, 8, 5
    w = np.arange(n_head * head_dim * cols, dtype=np.float32).reshape(n_head * head_dim, cols)
    g = hm.to_gguf_rows(w, n_head)
    half = head_dim // 2
    for h in range(n_head):
        for i in range(half):  # HF pairs row i with row i + half within a head
            assert np.array_equal(g[h * head_dim + 2 * i], w[h * head_dim + i])
            assert np.array_equal(g[h * head_dim + 2 * i + 1], w[h * head_dim + i + half])
    assert np.array_equal(hm.from_gguf_rows(g, n_head), w)


def test_written_gguf_loads_with_the_spec(bin_dir, tmp_path):
    """A llama GGUF from write_gguf with llama3 scaling: rope_freqs.weight equals make_model's
    llama3_rope_freqs, the q rows read back equal the HF ones, and qwen-logits runs it (its
    context is context_length = factor x original = 512 positions here)."""
    spec = hm.Spec("llama", "small", hm.parse_rope("llama3:8:1:4:64"))
    d = spec.dims
    rng = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight": rng.standard_normal((d["vocab_size"], d["hidden_size"])) * 0.02,
               "model.norm.weight": np.ones(d["hidden_size"])}
    q_rows = d["num_attention_heads"] * d["head_dim"]
    kv_rows = d["num_key_value_heads"] * d["head_dim"]
    for layer in range(d["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes = {"self_attn.q_proj.weight": (q_rows, d["hidden_size"]),
                  "self_attn.k_proj.weight": (kv_rows, d["hidden_size"]),
                  "self_attn.v_proj.weight": (kv_rows, d["hidden_size"]),
                  "self_attn.o_proj.weight": (d["hidden_size"], q_rows),
                  "mlp.gate_proj.weight": (d["intermediate_size"], d["hidden_size"]),
                  "mlp.up_proj.weight": (d["intermediate_size"], d["hidden_size"]),
                  "mlp.down_proj.weight": (d["hidden_size"], d["intermediate_size"])}
        for name, shape in shapes.items():
            tensors[p + name] = rng.standard_normal(shape) * shape[1] ** -0.5
        tensors[p + "input_layernorm.weight"] = np.ones(d["hidden_size"])
        tensors[p + "post_attention_layernorm.weight"] = np.ones(d["hidden_size"])
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    path = tmp_path / "llama3.gguf"
    hm.write_gguf(tensors, path, "F32", bin_dir, spec)
    back = hm.read_gguf_weights(path, spec)
    assert np.array_equal(back["blk.0.attn_q.weight"], tensors["model.layers.0.self_attn.q_proj.weight"])
    assert np.array_equal(back["rope_freqs.weight"], llama3_rope_freqs(64, hm.ROPE_THETA, factor=8.0, low_freq_factor=1.0,
                                                                       high_freq_factor=4.0, original_context_length=64))
    assert gguf.GGUFReader(str(path)).fields["llama.context_length"].contents() == 512
    ids = ",".join(map(str, rng.integers(0, d["vocab_size"], 513)))
    run = [str(bin_dir / "qwen-logits"), "-m", str(path), "--device", "cpu", "-o", str(tmp_path / "l.npy")]
    ok = subprocess.run([*run, "--tokens", ids[:ids.rindex(",")]], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    too_long = subprocess.run([*run, "--tokens", ids], capture_output=True, text=True)
    assert too_long.returncode == 1 and "exceeds the 512" in too_long.stderr, too_long.stderr


def test_too_many_positions_are_refused_first(tmp_path):
    """--n past the positions the spec's GGUF is trained for fails at argument parsing, naming both
    numbers, before any model is built (no torch needed)."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "hf_compare.py"), "--bin", str(tmp_path), "--out",
                           str(tmp_path), "--shape", "small", "--rope-scaling", "yarn:4:8192", "--n", "40000"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "--n 40000 exceeds the 32768 positions" in proc.stderr, proc.stderr


def test_cpu_fast_modes_are_refused(tmp_path):
    """--device cpu with a fast mode fails at argument parsing naming the mode: hf_compare's fast
    bars are the CUDA fast path's, and the CPU's 8-bit fast mode has its own (test_cpu_fast.py)."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "hf_compare.py"), "--bin", str(tmp_path), "--out",
                           str(tmp_path), "--device", "cpu", "--modes", "prefill,step-fast"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "--modes step-fast with --device cpu" in proc.stderr, proc.stderr
