"""qwen-bench on the CPU backend with a tiny synthetic model: the tests it names run and report
what they measured (pp, tg and the batched tg of -b), in markdown and JSON, and bad arguments
fail with a message naming them. Speed itself is checked on the GPU machine, never here."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.gguf"
    make_model(path, arch="qwen2", n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512,
               type="Q8_0", seed=3)
    return path


def bench(bin_dir, *args):
    return subprocess.run([str(bin_dir / "qwen-bench"), "--device", "cpu", "-t", "2", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_json_reports_every_test(bin_dir, model):
    """-p 8 -n 4 -b 1,3: pp8, tg4 and tg4 x3 (12 tokens: 3 sequences x 4 steps), each with one
    timed repetition and a positive rate."""
    out = bench(bin_dir, "-m", model, "-p", 8, "-n", 4, "-r", 1, "-b", "1,3", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["type"] == "Q8_0" and report["arch"] == "qwen2"
    tests = {t["test"]: t for t in report["tests"]}
    assert set(tests) == {"pp8", "tg4", "tg4 x3"}
    assert [tests[k]["n_tokens"] for k in ("pp8", "tg4", "tg4 x3")] == [8, 4, 12]
    for t in tests.values():
        assert len(t["seconds"]) == 1 and t["seconds"][0] > 0
        assert t["tok_s_mean"] > 0 and t["gb_s_mean"] > 0


def test_depth(bin_dir, model):
    """-d 40 (llama-bench's depth): every sequence's cache holds 40 positions first (written in one
    chunk here; -p 0 makes the chunk the fill's own size), and the tests run after them, named
    "@ d40"; the JSON names the depth. Exact: names, token counts, one positive timing each."""
    for p in (8, 0):
        out = bench(bin_dir, "-m", model, "-d", 40, "-p", p, "-n", 3, "-r", 1, "-b", "1,2", "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["depth"] == 40
        tests = {t["test"]: t for t in report["tests"]}
        want = {"tg3 @ d40": 3, "tg3 x2 @ d40": 6} | ({"pp8 @ d40": 8} if p else {})
        assert {k: t["n_tokens"] for k, t in tests.items()} == want
        assert all(t["seconds"][0] > 0 and t["tok_s_mean"] > 0 for t in tests.values())


def test_markdown_table(bin_dir, model):
    out = bench(bin_dir, "-m", model, "-p", 0, "-n", 2, "-r", 2, "-b", "2")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| qwen2 |")]
    assert len(rows) == 1 and "| tg2 x2 |" in rows[0], out.stdout
    assert "| model | type | size MiB | backend | test | t/s | GB/s |" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["-m", "/nonexistent.gguf"], "/nonexistent.gguf"),
    (["-b", "0"], "--batch"),
    (["-r", "0"], "--repetitions"),
    (["-d", "-1"], "--n-depth"),
    (["-ctk", "f16", "-ctv", "q8_0"], "-ctv q8_0"),
    (["--kv-type", "q4_0"], "--kv-type q4_0"),
])
def test_bad_arguments(bin_dir, model, args, message):
    full = args if args[0] == "-m" else ["-m", model, *args]
    out = bench(bin_dir, *full)
    assert out.returncode != 0
    assert message in out.stderr + out.stdout


@pytest.fixture(scope="module")
def model32(tmp_path_factory):
    """Heads of 32 (n_embd 128 over 4 heads): one Q8_0 block per head, so every KV type applies."""
    path = tmp_path_factory.mktemp("bench32") / "tiny32.gguf"
    make_model(path, arch="qwen2", n_embd=128, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_vocab=512,
               type="Q8_0", seed=3)
    return path


@pytest.mark.parametrize("kv, row", [("f32", 64 * 4), ("f16", 64 * 2), ("bf16", 64 * 2), ("q8_0", 2 * 34)])
def test_bytes_per_token_count_the_kv_type(bin_dir, model32, kv, row):
    """Model::decode_bytes, exact: the file's tensors but the embedding table (the untied lm_head is
    read instead), one embedding row, and per sequence the K/V of depth + 2 positions (depth + 1
    read, 1 written) of 2 layers x {K, V} x one row of n_head_kv * head_dim = 64 elements in the KV
    type. tg's GB/s is the sum of its steps' bytes (depth growing by one a step, x B sequences) over
    its time: relative 1e-9. -ctk/-ctv name the same type as --kv-type."""
    import gguf
    tensors = gguf.GGUFReader(model32).tensors
    weights = sum(int(t.n_bytes) for t in tensors if t.name != "token_embd.weight")
    emb_row = next(int(t.n_bytes) for t in tensors if t.name == "token_embd.weight") // 512
    per_pos = 2 * 2 * row
    depth, n, B = 5, 3, 2
    out = bench(bin_dir, "-m", model32, "-p", 0, "-n", n, "-r", 1, "-d", depth, "-b", B, "-ctk", kv, "-ctv", kv,
                "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["kv_type"] == kv.upper()
    assert report["kv_bytes_per_position"] == per_pos and report["weight_bytes_per_step"] == weights
    assert report["bytes_per_token"] == weights + emb_row + (depth + 2) * per_pos
    (tg,) = report["tests"]
    steps = sum(weights + B * (emb_row + (depth + i + 2) * per_pos) for i in range(n))
    assert tg["gb_s_mean"] * tg["seconds"][0] * 1e9 == pytest.approx(steps, rel=1e-9)
    assert "peak_pct" not in tg  # cpu without --peak-gbs: no roofline column


def test_peak_gbs_column(bin_dir, model):
    """--peak-gbs P adds '% of peak' = 100 x GB/s / P (markdown column and JSON, relative 1e-12)."""
    out = bench(bin_dir, "-m", model, "-p", 0, "-n", 2, "-r", 1, "--peak-gbs", 50, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (tg,) = report["tests"]
    assert report["peak_gbs"] == 50 and tg["peak_pct"] == pytest.approx(2 * tg["gb_s_mean"], rel=1e-12)
    md = bench(bin_dir, "-m", model, "-p", 0, "-n", 2, "-r", 1, "--peak-gbs", 50)
    assert "| t/s | GB/s | % of peak |" in md.stdout, md.stdout


def test_ubatch(bin_dir, model):
    """-ub (llama-bench's micro-batch): the pp test feeds its prompt in forwards of at most that
    many tokens, still named pp<N> with N tokens; the JSON states the forward size (the whole
    prompt by default). `-ub` is accepted as llama-bench spells it. Exact: names, counts, sizes."""
    for args, want in ((["-ub", 16], 16), ([], 40), (["--ubatch-size", 64], 40)):
        out = bench(bin_dir, "-m", model, "-p", 40, "-n", 0, "-r", 1, "--json", *args)
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["ubatch"] == want
        assert [(t["test"], t["n_tokens"]) for t in report["tests"]] == [("pp40", 40)]
        assert report["tests"][0]["tok_s_mean"] > 0
