"""CPU dequantization of every tensor type equals gguf.quants.dequantize on the same bytes, bit for bit.

Blocks are random bytes with finite fp16 scales (every type), plus floats quantized by the gguf
package for the types it can quantize. Values come back through `qwen-gguf tensor --out` (raw
float32). F16 and BF16 are also checked over all 65536 bit patterns against numpy's conversions.
Metric: byte equality of the float32 output (NaN: same NaN-ness and sign), tolerance 0."""
from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import gguf_corpus as corpus


def dequant_with_tool(bin_dir: pathlib.Path, path: pathlib.Path, name: str, out: pathlib.Path,
                      rows: str | None = None) -> np.ndarray:
    cmd = [str(bin_dir / "qwen-gguf"), "tensor", str(path), name, "--out", str(out)]
    if rows:
        cmd += ["--rows", rows]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return np.fromfile(out, dtype=np.float32)


@pytest.fixture(scope="module")
def typed_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    tensors = corpus.all_types_tensors(rng)
    # Larger random tensors so each K type sees a few hundred blocks.
    for qtype in corpus.SUPPORTED_TYPES:
        row = 256 * 4
        tensors[f"{qtype.name}.big"] = (qtype, corpus.random_row_bytes(qtype, 64, row, rng), (64, row))
    path = tmp_path_factory.mktemp("quants") / "types.gguf"
    corpus.write_gguf(path, {}, tensors)
    return path, tensors


def test_every_type_bit_exact(bin_dir, typed_file, tmp_path):
    path, tensors = typed_file
    seen = set()
    for name, (qtype, raw, shape) in tensors.items():
        want = corpus.reference_dequant(raw, qtype).reshape(-1)
        got = dequant_with_tool(bin_dir, path, name, tmp_path / "out.f32")
        assert got.shape == want.shape, name
        assert np.isfinite(want).all(), name  # finite scales -> finite values: compare bits directly
        assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist(), name
        seen.add(qtype)
    assert seen == set(corpus.SUPPORTED_TYPES)


def test_row_ranges_and_json(bin_dir, typed_file, tmp_path):
    path, tensors = typed_file
    for qtype in (T.Q4_K, T.Q5_0, T.BF16):
        name = f"{qtype.name}.big"
        raw = tensors[name][1]
        want = corpus.reference_dequant(raw, qtype).reshape(64, -1)
        got = dequant_with_tool(bin_dir, path, name, tmp_path / "rows.f32", rows="10:13").reshape(3, -1)
        assert (got.view(np.uint32) == want[10:13].view(np.uint32)).all(), name
        out = subprocess.run([str(bin_dir / "qwen-gguf"), "tensor", str(path), name, "--rows", "63:", "--json"],
                             check=True, capture_output=True, text=True, timeout=60).stdout
        j = json.loads(out)
        assert j["name"] == name and j["type"] == qtype.name and j["rows"] == [63, 64]
        assert (np.array(j["values"], dtype=np.float32) == want[63:64]).all(), name


@pytest.mark.parametrize("qtype", [T.F16, T.BF16])
def test_all_16bit_patterns_match_numpy(bin_dir, tmp_path, qtype):
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    path = tmp_path / f"{qtype.name}.gguf"
    corpus.write_gguf(path, {}, {"all": (qtype, bits.view(np.uint8).reshape(1, -1), (1 << 16,))})
    got = dequant_with_tool(bin_dir, path, "all", tmp_path / "all.f32")
    if qtype == T.F16:
        want = bits.view(np.float16).astype(np.float32)
    else:
        want = (bits.astype(np.uint32) << 16).view(np.float32)
    nan = np.isnan(want)
    assert (np.isnan(got) == nan).all()
    assert (np.signbit(got) == np.signbit(want)).all()
    assert (got.view(np.uint32)[~nan] == want.view(np.uint32)[~nan]).all()
    assert nan.sum() == (2046 if qtype == T.F16 else 254)  # every NaN pattern was exercised
