"""The reader on the real GGUF models from PyPI (scripts/fetch_model.py; docs/MODELS.md), when they
are in the local cache: `qwen-gguf info --json` agrees with gguf.GGUFReader on every metadata value
and the whole tensor table, and sampled rows of one tensor of each type dequantize bit for bit
like gguf.quants.dequantize. Skipped (with the command to fetch) when a model is not cached.
Metric: exact equality."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType
from gguf import quants

CACHE = pathlib.Path(os.environ.get("QWEN_CACHE") or "~/.cache/qwen.cu").expanduser() / "models"
MODELS = ["qwen2.5-coder-0.5b", "smollm2-135m", "gemma3-270m"]


def reader_value(field):
    """Python value of a GGUFReader field, arrays as lists."""
    vtype = field.types[0]
    if vtype == GGUFValueType.ARRAY:
        return [field.contents(i) for i in range(len(field.data))]
    return field.contents()


@pytest.mark.parametrize("name", MODELS)
def test_real_model_matches_gguf_reader(bin_dir, tmp_path, name):
    path = CACHE / f"{name}.gguf"
    if not path.is_file():
        pytest.skip(f"{path} not cached: run `python3 scripts/fetch_model.py {name}`")
    tool = str(bin_dir / "qwen-gguf")
    info = json.loads(subprocess.run([tool, "info", str(path), "--json"], check=True, capture_output=True,
                                     text=True, timeout=300).stdout)
    reader = GGUFReader(path)

    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert [m["key"] for m in info["metadata"]] == list(fields)
    for m in info["metadata"]:
        field = fields[m["key"]]
        assert m["type"] == field.types[0].name, m["key"]
        want = reader_value(field)
        if field.types[0] == GGUFValueType.ARRAY:
            assert m["elem_type"] == field.types[1].name and m["length"] == len(want), m["key"]
            if field.types[1] == GGUFValueType.FLOAT32:
                assert np.array_equal(np.float32(m["value"]), np.float32(want)), m["key"]
            else:
                assert m["value"] == want, m["key"]
        elif field.types[0] == GGUFValueType.FLOAT32:
            assert np.float32(m["value"]) == np.float32(want), m["key"]
        else:
            assert m["value"] == want, m["key"]

    assert info["data_offset"] == reader.data_offset
    assert len(info["tensors"]) == len(reader.tensors)
    first_of_type = {}
    for ours, theirs in zip(info["tensors"], reader.tensors):
        assert ours["name"] == theirs.name
        assert ours["type_id"] == int(theirs.tensor_type)
        assert ours["shape"] == [int(n) for n in theirs.shape]
        assert info["data_offset"] + ours["offset"] == theirs.data_offset
        assert ours["bytes"] == theirs.n_bytes
        first_of_type.setdefault(theirs.tensor_type, theirs)
    # The tensor data of these files ends exactly at EOF (docs/MODELS.md).
    assert max(t["offset"] + t["bytes"] for t in info["tensors"]) + info["data_offset"] == info["size"]

    out = tmp_path / "rows.f32"
    for qtype, t in first_of_type.items():
        ne0 = int(t.shape[0])
        rows = np.asarray(t.data).reshape(int(t.n_elements) // ne0, -1)
        n = min(len(rows), 64)
        subprocess.run([tool, "tensor", str(path), t.name, "--rows", f"0:{n}", "--out", str(out)], check=True,
                       capture_output=True, timeout=120)
        got = np.fromfile(out, dtype=np.float32)
        want = np.asarray(quants.dequantize(rows[:n], qtype), dtype=np.float32).reshape(-1)
        assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist(), (t.name, qtype.name)
