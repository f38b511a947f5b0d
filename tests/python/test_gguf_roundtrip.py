"""GGUF files written by the PyPI gguf package read back exactly by qwen.cu's reader, via
`qwen-gguf info --json`: every metadata value type (64-bit, bool, strings, nested arrays), the tensor
table of every tensor type (compared with gguf.GGUFReader), custom alignment and GGUF v2.
Metric: exact equality (FLOAT32 values compared as float32)."""
from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType

import gguf_corpus as corpus


def run_gguf(bin_dir: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / "qwen-gguf"), *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=120)


def info_json(bin_dir: pathlib.Path, path: pathlib.Path) -> dict:
    return json.loads(run_gguf(bin_dir, "info", path, "--json").stdout)


@pytest.fixture(scope="module")
def all_types_file(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    rng = np.random.default_rng(20261127)
    tensors = corpus.all_types_tensors(rng)
    path = tmp_path_factory.mktemp("gguf") / "all_types.gguf"
    corpus.write_gguf(path, corpus.ALL_METADATA, tensors, alignment=64)
    return path, tensors


def expect_value(got, value, vtype: GGUFValueType, where: str) -> None:
    if vtype == GGUFValueType.FLOAT32:
        assert np.float32(got) == np.float32(value), where
    elif vtype == GGUFValueType.BOOL:
        assert got is value, where
    else:
        assert got == value and type(got) is type(value), where


def expect_array(got: dict, value: list, sub: GGUFValueType, where: str) -> None:
    assert got["elem_type"] == sub.name, where
    assert got["length"] == len(value), where
    assert len(got["value"]) == len(value), where
    for i, (g, v) in enumerate(zip(got["value"], value)):
        if sub == GGUFValueType.ARRAY:  # GGUFWriter infers inner element types from the Python values
            inner = GGUFValueType.get_type(v[0])
            expect_array(g, v, inner, f"{where}[{i}]")
        else:
            expect_value(g, v, sub, f"{where}[{i}]")


def test_every_metadata_type_reads_back_exactly(bin_dir, all_types_file):
    path, _ = all_types_file
    info = info_json(bin_dir, path)
    meta = {m["key"]: m for m in info["metadata"]}
    assert [m["key"] for m in info["metadata"]][:2] == ["general.architecture", "general.alignment"]
    assert meta["general.architecture"] == {"key": "general.architecture", "type": "STRING", "value": "test"}
    assert meta["general.alignment"]["value"] == 64
    for key, (value, vtype, sub) in corpus.ALL_METADATA.items():
        got = meta[key]
        assert got["type"] == vtype.name, key
        if vtype == GGUFValueType.ARRAY:
            expect_array(got, value, sub, key)
        else:
            expect_value(got["value"], value, vtype, key)
    assert len(meta) == len(corpus.ALL_METADATA) + 2


def test_tensor_table_matches_gguf_reader(bin_dir, all_types_file):
    path, tensors = all_types_file
    info = info_json(bin_dir, path)
    reader = GGUFReader(path)
    assert info["version"] == 3
    assert info["alignment"] == 64
    assert info["data_offset"] == reader.data_offset
    assert info["size"] == path.stat().st_size
    assert len(info["tensors"]) == len(reader.tensors) == len(tensors)
    for ours, theirs in zip(info["tensors"], reader.tensors):
        qtype, raw, shape = tensors[theirs.name]
        assert ours["name"] == theirs.name
        assert ours["type"] == qtype.name and ours["type_id"] == int(theirs.tensor_type)
        assert ours["shape"] == [int(n) for n in theirs.shape] == list(reversed(shape))
        assert info["data_offset"] + ours["offset"] == theirs.data_offset
        assert ours["bytes"] == theirs.n_bytes == raw.nbytes
    total = sum(int(np.prod(s)) for _, _, s in tensors.values())
    assert info["parameters"] == total
    by_type = {}
    for qtype, raw, _ in tensors.values():
        entry = by_type.setdefault(qtype.name, {"tensors": 0, "bytes": 0})
        entry["tensors"] += 1
        entry["bytes"] += raw.nbytes
    assert {k: {"tensors": v["tensors"], "bytes": v["bytes"]} for k, v in info["totals"].items()} == by_type


def test_text_info_summarises_long_arrays(bin_dir, all_types_file):
    path, _ = all_types_file
    out = run_gguf(bin_dir, "info", path).stdout
    assert "test.arr_long" in out and "[UINT32 x 1000: 0, 1, 2, 3, 4, 5, 6, 7, ...]" in out
    assert "parameters:" in out and "Q6_K.random.3" in out
    limited = json.loads(run_gguf(bin_dir, "info", path, "--json", "--max-items", "2").stdout)
    arr = {m["key"]: m for m in limited["metadata"]}["test.arr_long"]
    assert arr["length"] == 1000 and arr["value"] == [0, 1]


def test_version2_and_metadata_only_file(bin_dir, tmp_path):
    path = tmp_path / "meta_only.gguf"
    corpus.write_gguf(path, {"test.u32": (7, GGUFValueType.UINT32, None)}, {})
    data = bytearray(path.read_bytes())
    assert data[4:8] == (3).to_bytes(4, "little")
    data[4:8] = (2).to_bytes(4, "little")  # v2 and v3 share the little-endian layout
    path.write_bytes(bytes(data))
    info = info_json(bin_dir, path)
    assert info["version"] == 2
    assert info["tensors"] == [] and info["parameters"] == 0
    assert {m["key"]: m["value"] for m in info["metadata"]}["test.u32"] == 7


def test_tool_errors_name_the_problem(bin_dir, tmp_path, all_types_file):
    path, _ = all_types_file
    bad = tmp_path / "bad_magic.gguf"
    bad.write_bytes(b"GGML" + path.read_bytes()[4:])
    r = run_gguf(bin_dir, "info", bad, check=False)
    assert r.returncode == 1 and str(bad) in r.stderr and "bad magic" in r.stderr
    r = run_gguf(bin_dir, "tensor", path, "no.such.tensor", check=False)
    assert r.returncode == 1 and "no tensor named 'no.such.tensor'" in r.stderr
    r = run_gguf(bin_dir, "tensor", path, "Q8_0.random.1", "--rows", "3:9", check=False)
    assert r.returncode == 1 and "rows 0:4" in r.stderr
    r = run_gguf(bin_dir, "info", tmp_path / "missing.gguf", check=False)
    assert r.returncode == 1 and "cannot open" in r.stderr
