"""qwen-cli with llama-cli's command lines on a tiny synthetic qwen2 model carrying the real Qwen
tokenizer and chat template (random weights: the checks compare outputs of equivalent command
lines, greedy, so they are exact): the single-dash spellings (-cnv, -no-cnv, -sys, -ctk/-ctv, -ngl),
-f, -e, --jinja, --version, conversation mode by default, every range refused before the model
loads, --help with defaults, context shift in interactive mode, errors without source locations."""
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory, tokenizer_dir):
    path = tmp_path_factory.mktemp("cli_llama") / "tiny-vocab.gguf"
    make_model(path, arch="qwen2", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=151936,
               type="Q8_0", seed=11, vocab=str(tokenizer_dir / "tokenizer.json"),
               vocab_config=str(tokenizer_dir / "tokenizer_config.json"))
    return path


def cli(bin_dir, *args, stdin=None):
    device = [] if "--device" in args else ["--device", "cpu"]
    return subprocess.run([str(bin_dir / "qwen-cli"), *device, *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=120)


GREEDY = ["-n", 8, "--temp", 0, "--ignore-eos"]


def test_llama_spellings_equal_long_names(bin_dir, model, tmp_path):
    """`-cnv -sys "Be brief." -f prompt.txt -n 16` == `--chat --system "Be brief." -p TEXT`, byte for byte;
    -ctk/-ctv f16 == --kv-type f16 and -ctk/-ctv bf16 == --kv-type bf16; -ngl 99 and --jinja change nothing."""
    (tmp_path / "prompt.txt").write_text("What is the capital of France?")
    short = cli(bin_dir, "-m", model, "-cnv", "-sys", "Be brief.", "-f", tmp_path / "prompt.txt", "-n", 16,
                "--temp", 0, "--ignore-eos")
    assert short.returncode == 0, short.stderr
    long = cli(bin_dir, "-m", model, "--chat", "--system", "Be brief.", "-p", "What is the capital of France?",
               "-n", 16, "--temp", 0, "--ignore-eos")
    assert short.stdout == long.stdout and "finish: length" in short.stderr
    a = cli(bin_dir, "-m", model, "-p", "Hi", *GREEDY, "-ctk", "f16", "-ctv", "f16", "-ngl", 99, "--jinja")
    b = cli(bin_dir, "-m", model, "-p", "Hi", *GREEDY, "--kv-type", "f16")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    q = cli(bin_dir, "-m", model, "-p", "Hi", *GREEDY, "-ctk", "bf16", "-ctv", "bf16")
    r = cli(bin_dir, "-m", model, "-p", "Hi", *GREEDY, "--kv-type", "bf16")
    assert q.returncode == 0, q.stderr
    assert q.stdout == r.stdout


def test_conversation_is_the_default_with_a_template(bin_dir, model):
    """-p alone on a model with a chat template == --chat -p (one turn, then exit); -no-cnv is the plain
    completion, which differs."""
    default = cli(bin_dir, "-m", model, "-p", "Hi", *GREEDY)
    chat = cli(bin_dir, "-m", model, "--chat", "-p", "Hi", *GREEDY)
    plain = cli(bin_dir, "-m", model, "-no-cnv", "-p", "Hi", *GREEDY)
    assert default.returncode == 0 and plain.returncode == 0, default.stderr + plain.stderr
    assert default.stdout == chat.stdout != plain.stdout
    n_prompt = lambda out: int(out.stderr.split("[prompt: ")[1].split()[0])  # noqa: E731
    assert n_prompt(plain) == 1 and n_prompt(default) > 5  # "Hi" alone vs wrapped in the template


def test_escape(bin_dir, model):
    """-e turns a written \\n into a newline: the same output as a prompt holding the newline."""
    escaped = cli(bin_dir, "-m", model, "-no-cnv", "-e", "-p", "a\\nb", *GREEDY)
    real = cli(bin_dir, "-m", model, "-no-cnv", "-p", "a\nb", *GREEDY)
    raw = cli(bin_dir, "-m", model, "-no-cnv", "-p", "a\\nb", *GREEDY)
    assert escaped.returncode == 0, escaped.stderr
    assert escaped.stdout == real.stdout != raw.stdout


@pytest.mark.parametrize("args, words", [
    (["--top-p", 2], ["--top-p", "2", "0.000000 to 1.000000"]),
    (["--temp", -1], ["--temp", "-1"]),
    (["--top-k", -5], ["--top-k", "-5"]),
    (["-t", -3], ["--threads", "-3"]),
    (["--min-p", 1.5], ["--min-p", "1.5"]),
    (["--repeat-penalty", 0], ["--repeat-penalty", "above 0"]),
    (["-n", -2], ["--n-predict", "-2"]),
    (["-c", 999999], ["a context of 999999 tokens", "4096", "context_length", "--ctx-overflow"]),
    (["-ctk", "q4_0"], ["-ctk q4_0", "f32, f16, bf16 or q8_0"]),
    (["-ctk", "f16", "-ctv", "q8_0"], ["-ctk f16", "-ctv q8_0"]),
    (["--kv-type", "bf16", "-ctk", "q8_0"], ["--kv-type bf16", "-ctk q8_0"]),
    (["-ctk", "q8_0", "-ctv", "q8_0"], ["Q8_0", "blocks of 32", "head_dim is 16"]),  # this model's heads
    (["-ngl", 0, "--device", "cuda"], ["-ngl 0", "--device cuda"]),
    (["-no-cnv", "-sys", "x"], ["-sys", "-no-cnv"]),
    (["-no-cnv", "--chat-template", "chatml"], ["--chat-template", "-no-cnv"]),
    (["-cnv", "-no-cnv"], ["--no-conversation"]),
])
def test_bad_values_fail_before_loading(bin_dir, model, args, words):
    """Each bad value: non-zero exit, the flag and the offending value or range in the message, and no
    'model:' line (the weights were never loaded); no source location."""
    out = cli(bin_dir, "-m", model, "-p", "x", *args)
    assert out.returncode != 0 and "model:" not in out.stderr, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr
    assert ".cpp:" not in out.stderr


def test_help_version_and_verbose_errors(bin_dir, model, tmp_path):
    """--help shows defaults; --version names the project; --verbose adds the source location."""
    help_ = cli(bin_dir, "--help")
    assert help_.returncode == 0 and "=256" in help_.stdout and "=0.95" in help_.stdout and "-cnv" in help_.stdout
    version = cli(bin_dir, "--version")
    assert version.returncode == 0 and "qwen.cu" in version.stdout
    quiet = cli(bin_dir, "-m", model, "-f", tmp_path / "none.txt")
    assert quiet.returncode == 1 and "none.txt" in quiet.stderr and ".cpp:" not in quiet.stderr
    loud = cli(bin_dir, "-m", model, "-f", tmp_path / "none.txt", "--verbose")
    assert loud.returncode == 1 and ".cpp:" in loud.stderr


def test_context_shift_keeps_the_chat_going(bin_dir, model):
    """Interactive, -c 160 and 40-token replies: six turns do not fit, so the oldest turns are dropped
    (said on stderr) and every turn still gets its full reply; the system prompt stays: every later
    turn reuses at least its ~25 cached tokens (dropped, the template's default system prompt would
    diverge after ~5); a message larger than the context is refused and the chat goes on."""
    lines = [f"Tell me about topic number {i}, in some detail please." for i in range(6)]
    lines.insert(3, "word " * 400)
    system = "You are a careful assistant who answers questions about many topics with short and accurate sentences."
    out = cli(bin_dir, "-m", model, "-i", "-c", 160, "-n", 40, "--temp", 0, "--ignore-eos", "-sys", system,
              stdin="\n".join(lines) + "\n")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("finish: length") == 6, out.stderr
    assert "dropped the" in out.stderr and "the context holds 160" in out.stderr
    cached = [int(part.split("(")[1].split()[0]) for part in out.stderr.split("[prompt: ")[1:]]
    assert cached[0] == 0 and min(cached[1:]) >= 25, cached


def test_bench_and_server_help_show_defaults(bin_dir):
    """--help of qwen-bench and qwen-server prints each option's default (=VALUE)."""
    bench = subprocess.run([str(bin_dir / "qwen-bench"), "--help"], capture_output=True, text=True, timeout=30)
    assert bench.returncode == 0 and "=512" in bench.stdout and "=128" in bench.stdout and "=f16" in bench.stdout
    server = subprocess.run([str(bin_dir / "qwen-server"), "--help"], capture_output=True, text=True, timeout=30)
    assert server.returncode == 0 and "=8080" in server.stdout and "=127.0.0.1" in server.stdout


def test_without_a_template_the_default_is_plain_completion(bin_dir, tmp_path, tokenizer_dir):
    """A model whose GGUF has no tokenizer.chat_template: -p is a plain completion (== -no-cnv), -sys
    is refused naming the missing template, --chat-template NAME turns conversation mode on."""
    bare = tmp_path / "no-template.gguf"
    make_model(bare, arch="qwen2", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=151936,
               type="Q8_0", seed=11, vocab=str(tokenizer_dir / "tokenizer.json"))
    default = cli(bin_dir, "-m", bare, "-p", "Hi", *GREEDY)
    plain = cli(bin_dir, "-m", bare, "-no-cnv", "-p", "Hi", *GREEDY)
    assert default.returncode == 0, default.stderr
    assert default.stdout == plain.stdout and "[prompt: 1 tokens" in default.stderr
    sys_ = cli(bin_dir, "-m", bare, "-sys", "x", "-p", "Hi", *GREEDY)
    assert sys_.returncode == 1 and "no chat template" in sys_.stderr and "model:" not in sys_.stderr
    named = cli(bin_dir, "-m", bare, "--chat-template", "chatml", "-p", "Hi", *GREEDY)
    assert named.returncode == 0 and "[prompt: 1 tokens" not in named.stderr, named.stderr


def test_speed_line_counts_decode_bytes(bin_dir, model):
    """The timing line's GB/s is Model::decode_bytes at the generation's mean depth (cached + prompt +
    half the generated tokens) times its tok/s: the weights but the embedding table (the untied
    lm_head is read instead), one embedding row, and the K/V of depth + 2 positions (F32 cache on the
    cpu: 2 layers x {K, V} x 32 elements x 4 bytes). Bound: the printed rounding (GB/s to 0.01, tok/s
    to 0.1) plus 1e-3 relative."""
    import re

    import gguf
    out = cli(bin_dir, "-m", model, "-no-cnv", "-p", "Hello there", "-n", 32, "--temp", 0, "--ignore-eos")
    assert out.returncode == 0, out.stderr
    m = re.search(r"\[prompt: (\d+) tokens \((\d+) cached\).*generation: (\d+) tokens in [\d.]+ ms, ([\d.]+) tok/s, "
                  r"([\d.]+) GB/s", out.stderr)
    assert m, out.stderr
    n_prompt, n_cached, n_gen, tok_s, gb_s = int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])
    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(model).tensors}
    untied = "output.weight" in tensors
    weights = sum(n for name, n in tensors.items() if name != "token_embd.weight" or not untied)
    depth = n_cached + n_prompt + n_gen // 2
    step = weights + tensors["token_embd.weight"] // 151936 + (depth + 2) * 2 * 2 * 32 * 4
    want = step * tok_s / 1e9
    assert abs(gb_s - want) <= 0.006 + step * 0.05 / 1e9 + 1e-3 * want, (gb_s, want)
