"""qwen-diff's default comparison follows the machine: cpu vs cuda where a GPU is present, else the
CPU's one-forward pass vs its own decode path (one token per forward through the KV cache), which
must agree within the default NMSE 1e-5 on every tensor (measured ~1e-13 on this tiny model)."""
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402


def test_default_devices_run_on_this_machine(bin_dir, tmp_path):
    model = tmp_path / "tiny.gguf"
    make_model(model, n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512, seed=1)
    out = subprocess.run([str(bin_dir / "qwen-diff"), "-m", str(model), "--tokens", "1,2,3,4,5,6"],
                         capture_output=True, text=True, timeout=120)
    header = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    if "cuda" in header:  # a GPU machine with a CUDA build: the cross-backend comparison
        assert header.startswith("cuda (one forward) vs cpu (one forward)"), out.stdout + out.stderr
    else:
        assert out.returncode == 0, out.stdout + out.stderr
        assert header.startswith("cpu (one token per forward) vs cpu (one forward)"), out.stdout
        assert "all 33 tensors within NMSE" in out.stdout and "top-1 agreement on the logits: 6/6" in out.stdout
    bad = subprocess.run([str(bin_dir / "qwen-diff"), "-m", str(model), "--tokens", "1", "--devices", "cpu"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--devices" in bad.stderr and ".cpp:" not in bad.stderr
