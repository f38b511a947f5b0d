"""qwen-quantize: files read back by gguf.GGUFReader, values checked against the PyPI gguf package.

- every type: each 2-D weight dequantized with gguf.quants.dequantize is within the relative RMS
  bound of round-to-nearest (metric: sqrt(sum (w - w')^2 / sum w^2) over all 2-D weights of the
  model together, ~4.7M N(0, sigma) values);
- Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 with --nearest: bytes equal gguf.quants.quantize of the same fp32
  values (without it, a scale search that gguf.quants does not have);
- the per-tensor rules of the _S/_M/_L mixes (docs/QUANTIZE.md), recomputed here independently;
- metadata copied, general.file_type set; the quantized model runs through qwen-logits;
- bad input: unknown type, quantized input, missing file, rows no type fits.
"""
import subprocess
import sys

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402

N_LAYER = 8
# Relative RMS bounds on N(0,1) per stored type: the round-to-nearest figures (Q8_0, Q4_0,
# Q4_K, Q5_K, Q6_K); for the others our round-to-nearest measured on 2^20 values, rounded up.
BOUND = {QT.Q8_0: 0.0054, QT.Q4_0: 0.086, QT.Q4_1: 0.0785, QT.Q5_0: 0.043, QT.Q5_1: 0.038,
         QT.Q2_K: 0.33, QT.Q3_K: 0.155, QT.Q4_K: 0.078, QT.Q5_K: 0.038, QT.Q6_K: 0.022}
# llama-quantize names -> (general.file_type, base type).
MIXES = {"Q8_0": (7, QT.Q8_0), "Q4_0": (2, QT.Q4_0), "Q4_1": (3, QT.Q4_1), "Q5_0": (8, QT.Q5_0),
         "Q5_1": (9, QT.Q5_1), "Q2_K": (10, QT.Q2_K), "Q3_K_S": (11, QT.Q3_K), "Q3_K_M": (12, QT.Q3_K),
         "Q3_K_L": (13, QT.Q3_K), "Q4_K_S": (14, QT.Q4_K), "Q4_K_M": (15, QT.Q4_K),
         "Q5_K_S": (16, QT.Q5_K), "Q5_K_M": (17, QT.Q5_K), "Q6_K": (18, QT.Q6_K)}
LEGACY = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """An F32 qwen2 model: 256-wide rows, 8 layers, GQA 4:1, untied output."""
    path = tmp_path_factory.mktemp("quantize") / "f32.gguf"
    make_model(path, arch="qwen2", n_embd=256, n_layer=N_LAYER, n_head=4, n_head_kv=1, n_ff=512,
               n_vocab=512, seed=5)
    return path


def quantize(bin_dir, inp, out, qtype, *extra, ok=True):
    cmd = [str(bin_dir / "qwen-quantize"), str(inp), str(out), qtype, "-t", "2", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return proc


def tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def values(t):
    """The tensor as fp32 [rows][ne0], dequantized by the gguf package."""
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(-1, int(t.shape[0]))


def is_weight_2d(t):
    return len(t.shape) == 2 and not t.name.endswith("_norm.weight")


@pytest.mark.parametrize("mix", list(MIXES))
def test_pure_within_rms_bounds(bin_dir, src, tmp_path, mix):
    out = tmp_path / f"{mix}.gguf"
    quantize(bin_dir, src, out, mix, "--pure")
    base = MIXES[mix][1]
    a, b = tensors(src), tensors(out)
    assert list(a) == list(b)
    err = ref = 0.0
    for name, t in b.items():
        if not is_weight_2d(t):
            assert t.tensor_type == a[name].tensor_type and bytes(t.data) == bytes(a[name].data), name
            continue
        assert t.tensor_type == base, name
        w, w2 = values(a[name]).astype(np.float64), values(t).astype(np.float64)
        err += float(np.sum((w - w2) ** 2))
        ref += float(np.sum(w ** 2))
    assert np.sqrt(err / ref) <= BOUND[base], f"{mix}: relative RMS {np.sqrt(err / ref):.5f}"


@pytest.mark.parametrize("mix", LEGACY)
def test_legacy_types_equal_gguf_quantize(bin_dir, src, tmp_path, mix):
    """--nearest: ggml's reference quantizers, byte for byte."""
    out = tmp_path / f"{mix}.gguf"
    quantize(bin_dir, src, out, mix, "--pure", "--nearest")
    a, b = tensors(src), tensors(out)
    for name, t in b.items():
        if is_weight_2d(t):
            expect = gguf.quants.quantize(values(a[name]), MIXES[mix][1])
            assert bytes(np.asarray(t.data)) == expect.tobytes(), name


@pytest.mark.parametrize("src_type", ["F16", "BF16"])
def test_half_inputs(bin_dir, tmp_path, src_type):
    """F16 / BF16 weights are widened exactly, so Q8_0 bytes equal gguf.quants.quantize of them."""
    inp = tmp_path / f"{src_type}.gguf"
    make_model(inp, n_embd=256, n_layer=1, n_ff=512, n_vocab=256, type=src_type, seed=2)
    out = tmp_path / "q8.gguf"
    quantize(bin_dir, inp, out, "Q8_0")
    a, b = tensors(inp), tensors(out)
    n_q8 = 0
    for name, t in b.items():
        if is_weight_2d(t):  # Q8_0 mix: the output too
            assert bytes(np.asarray(t.data)) == gguf.quants.quantize(values(a[name]), QT.Q8_0).tobytes(), name
            n_q8 += 1
    assert n_q8 == 9  # token_embd, output, 7 per layer


def expected_type(mix, name, n_layer, n_gqa):
    """llama-quantize's rules (docs/QUANTIZE.md) for a dense model with 256-wide rows, untied."""
    base = MIXES[mix][1]
    if name == "output.weight":
        return QT.Q8_0 if base == QT.Q8_0 else QT.Q6_K
    if not name.startswith("blk."):
        return base
    i = int(name.split(".")[1])
    more = i < n_layer // 8 or i >= 7 * n_layer // 8 or (i - n_layer // 8) % 3 == 2
    if "attn_v" in name:
        return {"Q2_K": QT.Q4_K if n_gqa >= 4 else QT.Q3_K,
                "Q3_K_M": QT.Q5_K if i < 2 else QT.Q4_K, "Q3_K_L": QT.Q5_K,
                "Q4_K_M": QT.Q6_K if more else base, "Q5_K_M": QT.Q6_K if more else base,
                "Q4_K_S": QT.Q5_K if i < 4 else base}.get(mix, base)
    if "ffn_down" in name:
        return {"Q2_K": QT.Q3_K, "Q3_K_M": QT.Q5_K if i < n_layer // 16 else QT.Q4_K, "Q3_K_L": QT.Q5_K,
                "Q4_K_M": QT.Q6_K if more else base, "Q5_K_M": QT.Q6_K if more else base,
                "Q4_K_S": QT.Q5_K if i < n_layer // 8 else base}.get(mix, base)
    if "attn_output" in name:
        return {"Q2_K": QT.Q3_K, "Q3_K_M": QT.Q4_K, "Q3_K_L": QT.Q5_K}.get(mix, base)
    return base


@pytest.mark.parametrize("mix", list(MIXES))
def test_mix_recipe_and_metadata(bin_dir, src, tmp_path, mix):
    out = tmp_path / f"{mix}.gguf"
    quantize(bin_dir, src, out, mix)
    ra, rb = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(out))
    for t in rb.tensors:
        if is_weight_2d(t):
            assert t.tensor_type == expected_type(mix, t.name, N_LAYER, 4), t.name
        else:
            assert t.tensor_type == QT.F32, t.name
    fa, fb = ra.fields, rb.fields
    assert int(fb["general.file_type"].contents()) == MIXES[mix][0]
    assert int(fb["general.quantization_version"].contents()) == 2
    for key, field in fa.items():
        if key.startswith("GGUF.") or key in ("general.file_type", "general.quantization_version"):
            continue
        assert key in fb, key
        assert field.types == fb[key].types and field.contents() == fb[key].contents(), key


def test_tied_embedding_is_quantized_as_the_output(bin_dir, tmp_path):
    """No output.weight: token_embd doubles as the output and gets its Q6_K (llama-quantize)."""
    inp = tmp_path / "tied.gguf"
    make_model(inp, n_embd=256, n_layer=1, n_ff=512, n_vocab=256, tied=True, seed=4)
    out = tmp_path / "tied-q4km.gguf"
    quantize(bin_dir, inp, out, "Q4_K_M")
    t = tensors(out)
    assert "output.weight" not in t and t["token_embd.weight"].tensor_type == QT.Q6_K


def test_threads_do_not_change_the_bytes(bin_dir, src, tmp_path):
    a, b = tmp_path / "t1.gguf", tmp_path / "t2.gguf"
    subprocess.run([str(bin_dir / "qwen-quantize"), str(src), str(a), "Q4_K_M", "-t", "1"], check=True,
                   capture_output=True)
    quantize(bin_dir, src, b, "Q4_K_M")
    assert a.read_bytes() == b.read_bytes()


def run_logits(bin_dir, model, tokens, out):
    cmd = [str(bin_dir / "qwen-logits"), "-m", str(model), "--tokens", ",".join(map(str, tokens)),
           "-o", str(out), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return np.load(out).astype(np.float64)


# Metric: relative RMS of the logits' difference from the F32 model's over 32 positions x 512
# vocabulary entries, and top-1 agreement. The random 8-layer model amplifies weight error ~3-4x
# (measured: Q8_0 0.020 / 0.97, Q6_K 0.057 / 0.88, Q5_K_M 0.11 / 0.81, Q4_K_M 0.21 / 0.59); bounds
# leave ~1.5x room on the error and ~0.1 on top-1.
LOGIT_BOUNDS = {"Q8_0": (0.03, 0.87), "Q6_K": (0.085, 0.78), "Q5_K_M": (0.165, 0.7), "Q4_K_M": (0.3, 0.49)}


@pytest.mark.parametrize("mix", list(LOGIT_BOUNDS))
def test_quantized_model_runs_and_tracks_f32_logits(bin_dir, src, tmp_path, mix):
    out = tmp_path / f"{mix}.gguf"
    quantize(bin_dir, src, out, mix)
    tokens = np.random.default_rng(1).integers(0, 512, 32).tolist()
    ref = run_logits(bin_dir, src, tokens, tmp_path / "ref.npy")
    got = run_logits(bin_dir, out, tokens, tmp_path / "q.npy")
    rel = np.sqrt(np.mean((got - ref) ** 2) / np.mean(ref ** 2))
    top1 = np.mean(got.argmax(-1) == ref.argmax(-1))
    max_rel, min_top1 = LOGIT_BOUNDS[mix]
    assert rel <= max_rel and top1 >= min_top1, f"{mix}: relative RMS {rel:.4f}, top-1 {top1:.2f}"


def write_gguf(path, tensors_by_name):
    w = gguf.GGUFWriter(str(path), arch="qwen2")
    w.add_block_count(1)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    for name, data in tensors_by_name.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_rows_not_filling_blocks_fall_back(bin_dir, tmp_path):
    """As llama-quantize: Q4_K -> Q5_0 for 96-wide rows, F16 for 40-wide rows (named on stderr)."""
    rng = np.random.default_rng(0)
    inp = tmp_path / "odd.gguf"
    write_gguf(inp, {"blk.0.ffn_up.weight": rng.standard_normal((8, 96), dtype=np.float32),
                     "blk.0.attn_q.weight": rng.standard_normal((8, 40), dtype=np.float32)})
    out = tmp_path / "odd-q4k.gguf"
    proc = quantize(bin_dir, inp, out, "Q4_K_M")
    t = tensors(out)
    assert t["blk.0.ffn_up.weight"].tensor_type == QT.Q5_0
    assert t["blk.0.attn_q.weight"].tensor_type == QT.F16
    assert "blk.0.attn_q.weight: fallback" in proc.stderr and "Q4_K -> F16" in proc.stderr
    proc = quantize(bin_dir, inp, tmp_path / "odd-q40.gguf", "Q4_0", ok=False)
    assert proc.returncode != 0 and "blk.0.attn_q.weight" in proc.stderr and "40" in proc.stderr
    assert not (tmp_path / "odd-q40.gguf").exists() and not (tmp_path / "odd-q40.gguf.part").exists()


def test_unknown_type_is_refused(bin_dir, src, tmp_path):
    proc = quantize(bin_dir, src, tmp_path / "x.gguf", "Q4_K_X", ok=False)
    assert proc.returncode != 0 and "Q4_K_X" in proc.stderr and "Q4_K_M" in proc.stderr
    assert not (tmp_path / "x.gguf").exists()


def test_quantized_input_is_refused(bin_dir, tmp_path):
    inp = tmp_path / "q8.gguf"
    make_model(inp, n_embd=256, n_layer=1, n_ff=512, n_vocab=256, type="Q8_0")
    proc = quantize(bin_dir, inp, tmp_path / "x.gguf", "Q4_0", ok=False)
    assert proc.returncode != 0 and "token_embd.weight" in proc.stderr and "Q8_0" in proc.stderr


def test_missing_file_is_named(bin_dir, tmp_path):
    missing = tmp_path / "nope.gguf"
    proc = quantize(bin_dir, missing, tmp_path / "x.gguf", "Q8_0", ok=False)
    assert proc.returncode != 0 and str(missing) in proc.stderr


def test_mix_needs_model_shape_but_pure_does_not(bin_dir, tmp_path):
    inp = tmp_path / "bare.gguf"
    w = gguf.GGUFWriter(str(inp), arch="qwen2")
    w.add_tensor("blk.0.ffn_up.weight", np.ones((4, 256), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    proc = quantize(bin_dir, inp, tmp_path / "x.gguf", "Q4_K_M", ok=False)
    assert proc.returncode != 0 and "qwen2.block_count" in proc.stderr and "--pure" in proc.stderr
    quantize(bin_dir, inp, tmp_path / "y.gguf", "Q4_K_M", "--pure")
    assert tensors(tmp_path / "y.gguf")["blk.0.ffn_up.weight"].tensor_type == QT.Q4_K


def test_non_finite_weight_is_refused(bin_dir, tmp_path):
    w = np.ones((4, 256), dtype=np.float32)
    w[2, 7] = np.nan
    inp = tmp_path / "nan.gguf"
    write_gguf(inp, {"blk.0.ffn_up.weight": w})
    proc = quantize(bin_dir, inp, tmp_path / "x.gguf", "Q4_K_M", ok=False)
    assert proc.returncode != 0 and "blk.0.ffn_up.weight" in proc.stderr and "row 2 element 7" in proc.stderr
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.part").exists()
