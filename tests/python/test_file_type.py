"""The type a tool calls a GGUF file by (src/gguf/file_type, shown by qwen-bench): general.file_type
read as llama.cpp's ftype (the real default model is a Q4_K_M file: Q4_K and Q6_K matrices, ftype 15,
once labelled Q6_K after its ffn_down), else the ggml type holding the most elements among the 2-D
tensors (synthetic models carry no general.file_type)."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fetch_model  # noqa: E402
from make_model import make_model  # noqa: E402


def bench_type(bin_dir, model):
    out = subprocess.run([str(bin_dir / "qwen-bench"), "-m", str(model), "-p", "0", "-n", "0", "--json", "--device",
                          "cpu"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["type"]


def test_real_model_is_named_by_its_ftype(bin_dir):
    try:
        model = fetch_model.fetch(fetch_model.default_name())
    except Exception as e:  # no network and no cache: the model is unavailable here
        pytest.skip(f"default model could not be fetched: {e}")
    assert bench_type(bin_dir, model) == "Q4_K_M"


@pytest.mark.parametrize("matrices, embd", [("Q4_K", "Q6_K"), ("Q6_K", "Q4_K"), ("Q8_0", "F16")])
def test_without_ftype_the_most_common_matrix_type_names_the_file(bin_dir, tmp_path, matrices, embd):
    """Default make_model shape: the layers' matrices hold ~1.2M elements, token_embd 131k."""
    model = tmp_path / "m.gguf"
    make_model(model, type=matrices, embd_type=embd, seed=2)
    assert bench_type(bin_dir, model) == matrices
