"""qwen-cli end to end on a tiny synthetic qwen2 model carrying the real Qwen tokenizer and chat
template (random weights, so the checks are about behaviour, not content): greedy output is
deterministic and equals the model's argmax continuation computed with qwen-logits, seeds
reproduce, -n / --stop bound the output, --chat renders the template, -i reads turns from stdin,
errors are clear. llama-cli's spellings and defaults are in test_cli_llama.py."""
import subprocess
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory, tokenizer_dir):
    path = tmp_path_factory.mktemp("cli") / "tiny-vocab.gguf"
    make_model(path, arch="qwen2", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=151936,
               type="Q8_0", seed=11, vocab=str(tokenizer_dir / "tokenizer.json"),
               vocab_config=str(tokenizer_dir / "tokenizer_config.json"))
    return path


def cli(bin_dir, *args, stdin=None, device="cpu"):
    return subprocess.run([str(bin_dir / "qwen-cli"), "--device", device, *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_greedy_equals_argmax_continuation(bin_dir, model, tokenizer_json, tmp_path):
    """Greedy qwen-cli text == decoding the argmax chain of teacher-forced qwen-logits."""
    n = 6
    out = cli(bin_dir, "-m", model, "-no-cnv", "-p", "Hello world", "-n", n, "--temp", 0, "--ignore-eos")
    assert out.returncode == 0, out.stderr
    assert "finish: length" in out.stderr and "tok/s" in out.stderr
    assert "loading [" not in out.stderr and "\r" not in out.stderr  # no progress bar into a pipe
    tok = Tokenizer.from_file(str(tokenizer_json))
    ids = tok.encode("Hello world").ids
    prompt_len = len(ids)
    for _ in range(n):
        subprocess.run([str(bin_dir / "qwen-logits"), "-m", str(model), "--tokens", ",".join(map(str, ids)),
                        "-o", str(tmp_path / "l.npy"), "--device", "cpu"], check=True, capture_output=True)
        ids.append(int(np.argmax(np.load(tmp_path / "l.npy")[-1])))
    assert out.stdout == tok.decode(ids[prompt_len:], skip_special_tokens=True)


def test_seed_reproducible(bin_dir, model):
    args = ["-m", model, "-p", "Once", "-n", 12, "--temp", 1.0, "--top-k", 0, "--top-p", 1, "--min-p", 0,
            "--ignore-eos"]
    a = cli(bin_dir, *args, "--seed", 3)
    b = cli(bin_dir, *args, "--seed", 3)
    c = cli(bin_dir, *args, "--seed", 4)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_stop_string(bin_dir, model):
    full = cli(bin_dir, "-m", model, "-p", "Once", "-n", 16, "--temp", 0, "--ignore-eos").stdout
    assert len(full) >= 8
    stop = full[len(full) // 2:len(full) // 2 + 3]
    out = cli(bin_dir, "-m", model, "-p", "Once", "-n", 16, "--temp", 0, "--ignore-eos", "--stop", stop)
    assert out.returncode == 0, out.stderr
    assert out.stdout == full[:full.index(stop)]
    assert "finish: stop" in out.stderr


def test_chat_single_turn_and_interactive(bin_dir, model):
    one = cli(bin_dir, "-m", model, "--chat", "-p", "Hi there", "-n", 4, "--temp", 0, "--ignore-eos",
              "--system", "Be brief.")
    assert one.returncode == 0, one.stderr
    assert "finish: length" in one.stderr
    # Two turns from stdin: the second reuses the cached prefix of the first conversation.
    multi = cli(bin_dir, "-m", model, "-i", "-n", 4, "--temp", 0, "--ignore-eos", stdin="Hi there\nAnd again\n")
    assert multi.returncode == 0, multi.stderr
    assert multi.stderr.count("finish: length") == 2
    cached = [int(line.split("(")[1].split()[0]) for line in multi.stderr.splitlines() if "cached)" in line]
    assert cached[0] == 0 and cached[1] > 10, multi.stderr


def test_errors_are_clear(bin_dir, model, tmp_path):
    missing = cli(bin_dir, "-m", tmp_path / "nope.gguf", "-p", "x")
    assert missing.returncode == 1 and "nope.gguf" in missing.stderr
    no_prompt = cli(bin_dir, "-m", model, "-no-cnv")
    assert no_prompt.returncode == 1 and "-p" in no_prompt.stderr
    bad_device = cli(bin_dir, "-m", model, "-p", "x", device="tpu")
    assert bad_device.returncode != 0 and "tpu" in bad_device.stderr


def test_logits_prompt_is_tokenized_like_hf(bin_dir, model, tokenizer_json, tmp_path):
    """qwen-logits --prompt (special tokens parsed) == --tokens with the HF tokenizer's ids, bitwise."""
    text = "<|im_start|>user\nHow are you? 123 ünïcödé<|im_end|>\n"
    ids = Tokenizer.from_file(str(tokenizer_json)).encode(text).ids
    base = [str(bin_dir / "qwen-logits"), "-m", str(model), "--device", "cpu"]
    subprocess.run([*base, "--prompt", text, "-o", str(tmp_path / "p.npy")], check=True, capture_output=True)
    subprocess.run([*base, "--tokens", ",".join(map(str, ids)), "-o", str(tmp_path / "t.npy")], check=True,
                   capture_output=True)
    assert np.array_equal(np.load(tmp_path / "p.npy"), np.load(tmp_path / "t.npy"))


def test_logits_tokens_file_equals_tokens(bin_dir, model, tmp_path):
    """qwen-logits --tokens-file (ids split by commas, spaces and newlines: the form long inputs
    need, as one argument holds at most 128 KiB) == --tokens with the same ids, bitwise; a file
    without ids is an error naming the flag."""
    ids = [9707, 11, 1879, 0, 151643, 42]
    (tmp_path / "ids.txt").write_text("9707, 11\n1879 0,151643\n\n42\n")
    base = [str(bin_dir / "qwen-logits"), "-m", str(model), "--device", "cpu"]
    subprocess.run([*base, "--tokens-file", str(tmp_path / "ids.txt"), "-o", str(tmp_path / "f.npy")], check=True,
                   capture_output=True)
    subprocess.run([*base, "--tokens", ",".join(map(str, ids)), "-o", str(tmp_path / "t.npy")], check=True,
                   capture_output=True)
    assert np.array_equal(np.load(tmp_path / "f.npy"), np.load(tmp_path / "t.npy"))
    (tmp_path / "empty.txt").write_text(" \n")
    proc = subprocess.run([*base, "--tokens-file", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "e.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "--tokens-file: " in proc.stderr and "holds no token ids" in proc.stderr, \
        proc.stderr


def test_ctrl_c_stops_the_reply_not_the_chat(bin_dir, model):
    """SIGINT during an interactive reply cancels it; the next line still gets a full answer."""
    import signal
    proc = subprocess.Popen([str(bin_dir / "qwen-cli"), "--device", "cpu", "-m", str(model), "-i", "-n", "300",
                             "--temp", "0", "--ignore-eos"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("Tell me a long story\n")
        proc.stdin.flush()
        proc.stdout.read(1)  # the reply has started
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate("Hi\n/exit\n", timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.count("finish: cancelled") == 1 and err.count("finish: length") == 1, err


def test_load_line_names_the_kv_cache_size(bin_dir, model):
    """The load line states the KV cache: 4096 positions x 2 layers x (K, V) x 32 values (2 KV heads
    of 16) x 4 bytes (f32 on the CPU) = 2.0 MiB. Exact."""
    out = cli(bin_dir, "-m", model, "-no-cnv", "-p", "x", "-n", 1, "-c", 4096)
    assert out.returncode == 0, out.stderr
    assert ", ctx 4096, KV cache 2.0 MiB," in out.stderr, out.stderr
