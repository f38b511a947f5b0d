"""qwen-tokenize on plain text (-p, -f, --stdin) as llama-tokenize prints it, against HF tokenizers
with the repository's Qwen tokenizer: the ids are identical, and the per-token piece view spells
every token's bytes so that, concatenated (escapes undone), they give the text back."""
import ast
import subprocess
import sys

import pytest
from tokenizers import Tokenizer

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from make_model import make_model  # noqa: E402

TEXT = "Hello wörld!\n\tTabs, 'quotes', back\\slash, 你好 😀 and more."


@pytest.fixture(scope="module")
def model(tmp_path_factory, tokenizer_dir):
    path = tmp_path_factory.mktemp("tok") / "tiny-vocab.gguf"
    make_model(path, n_embd=32, n_layer=1, n_head=2, n_head_kv=1, n_ff=64, n_vocab=151936, seed=3,
               vocab=str(tokenizer_dir / "tokenizer.json"), vocab_config=str(tokenizer_dir / "tokenizer_config.json"))
    return path


def tokenize(bin_dir, model, *args, stdin=None):
    return subprocess.run([str(bin_dir / "qwen-tokenize"), "-m", str(model), *map(str, args)], input=stdin,
                          capture_output=True, timeout=60)


def test_plain_text_ids_match_hf(bin_dir, model, tokenizer_json, tmp_path):
    """-p, -f and --stdin with --ids print the ids HF tokenizers gives; --special parses a written
    <|im_end|> into its one id, as HF does."""
    hf = Tokenizer.from_file(str(tokenizer_json))
    want = hf.encode(TEXT, add_special_tokens=False).ids
    (tmp_path / "t.txt").write_bytes(TEXT.encode())
    for args, stdin in [(["-p", TEXT], None), (["-f", tmp_path / "t.txt"], None), (["--stdin"], TEXT.encode())]:
        out = tokenize(bin_dir, model, *args, "--ids", stdin=stdin)
        assert out.returncode == 0, out.stderr
        assert ast.literal_eval(out.stdout.decode()) == want, args
    special = tokenize(bin_dir, model, "-p", "a<|im_end|>", "--special", "--ids")
    assert ast.literal_eval(special.stdout.decode()) == hf.encode("a<|im_end|>").ids
    assert 151645 in ast.literal_eval(special.stdout.decode())


def test_piece_view_spells_the_text(bin_dir, model, tokenizer_json):
    """One line per token, 'id -> literal': the ids are HF's and the literals, unescaped and joined,
    are the text's bytes."""
    out = tokenize(bin_dir, model, "-p", TEXT)
    assert out.returncode == 0, out.stderr
    ids, pieces = [], b""
    for line in out.stdout.decode().splitlines():
        id_, literal = line.split(" -> ", 1)
        ids.append(int(id_))
        pieces += ast.literal_eval("b" + literal) if literal.isascii() else ast.literal_eval(literal).encode()
    assert ids == Tokenizer.from_file(str(tokenizer_json)).encode(TEXT).ids
    assert pieces == TEXT.encode()


def test_plain_stdin_without_flag_says_what_to_do(bin_dir, model):
    """JSON Lines stays the default of stdin; plain text there gets an error naming --stdin."""
    out = tokenize(bin_dir, model, stdin=b"Hello world\n")
    assert out.returncode == 1 and b"--stdin" in out.stderr and b".cpp:" not in out.stderr
    both = tokenize(bin_dir, model, "-p", "x", "--decode")
    assert both.returncode != 0 and b"--decode" in both.stderr
