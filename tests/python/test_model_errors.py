"""Model loading rejects bad files with an error that names the key or tensor and the bad value
(exit code 1, no crash). Each case copies a good tiny model with one thing changed."""
import subprocess
import sys

import gguf
import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("errors") / "good.gguf"
    make_model(path, arch="qwen2", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=64)
    return path


def rewrite(src, dst, arch=None, drop_keys=(), set_keys=None, drop_tensors=(), reshape=None):
    """Copies the GGUF `src` to `dst` with keys / tensors dropped, set or reshaped."""
    r = gguf.GGUFReader(str(src))
    arch = arch or r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch=arch)
    old_arch = r.fields["general.architecture"].contents()
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_keys:
            continue
        w.add_key_value(key.replace(old_arch + ".", arch + ".", 1), field.contents(), field.types[0])
    for key, (value, vtype) in (set_keys or {}).items():
        w.add_key_value(key, value, vtype)
    for t in r.tensors:
        if t.name in drop_tensors:
            continue
        data = np.array(t.data)
        if reshape and t.name in reshape:
            data = data.reshape(reshape[t.name])
        w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def load_error(bin_dir, path):
    proc = subprocess.run([str(bin_dir / "qwen-logits"), "-m", str(path), "--tokens", "1,2", "-o",
                           str(path.with_suffix(".npy")), "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 1, f"expected a load error, got rc={proc.returncode}\n{proc.stderr}"
    return proc.stderr


U32 = gguf.GGUFValueType.UINT32
STR = gguf.GGUFValueType.STRING


@pytest.mark.parametrize("name, change, expected", [
    ("arch", dict(arch="gpt9"), "general.architecture = 'gpt9' is not supported"),
    ("missing_key", dict(drop_keys=["qwen2.block_count"]), "missing required key qwen2.block_count"),
    ("zero_heads", dict(drop_keys=["qwen2.attention.head_count"],
                        set_keys={"qwen2.attention.head_count": (0, U32)}),
     "qwen2.attention.head_count = 0 is out of range"),
    ("gqa", dict(drop_keys=["qwen2.attention.head_count_kv"],
                 set_keys={"qwen2.attention.head_count_kv": (3, U32)}), "is not a multiple of"),
    ("rope_scaling", dict(set_keys={"qwen2.rope.scaling.type": ("longrope", STR)}),
     "qwen2.rope.scaling.type = 'longrope' is not supported"),
    ("missing_tensor", dict(drop_tensors=["blk.1.ffn_up.weight"]), "blk.1.ffn_up.weight"),
    ("missing_bias", dict(drop_tensors=["blk.0.attn_k.bias"]), "missing tensor blk.0.attn_k.bias"),
    ("bad_shape", dict(reshape={"blk.0.attn_q.weight": (32, 128)}),
     "tensor blk.0.attn_q.weight has shape 128x32, expected 64x64"),
])
def test_load_errors_name_the_problem(bin_dir, good, tmp_path, name, change, expected):
    bad = rewrite(good, tmp_path / f"{name}.gguf", **change)
    err = load_error(bin_dir, bad)
    assert expected in err, err
