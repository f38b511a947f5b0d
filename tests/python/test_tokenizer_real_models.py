"""Tokenizers of real GGUF files made by llama.cpp's converter (when cached locally), on the parity
corpus. Skipped with the fetch command when a model is not cached.

  * qwen2.5-coder-0.5b (gpt2 / qwen2): vs HF tokenizers on the shared Qwen tokenizer.json (the same
    vocabulary; strings using the 4 added tokens Qwen2.5 lacks are left out; HF's `special` flags
    set from the GGUF token types, since llama.cpp's converter makes every <|...|> token CONTROL,
    e.g. <|fim_middle|>, which HF calls non-special), and its own chat template vs jinja2.
  * smollm2-135m (gpt2 / smollm, 21 byte tokens missing): vs HF tokenizers built from the GGUF's
    own vocabulary and merges with SmolLM2's pre-tokenizer (Digits + ByteLevel).
  * gemma3-270m (llama / SentencePiece, 262,144 pieces, byte fallback): vs the `sentencepiece`
    library on a model proto holding the GGUF's pieces. Its 165 user-defined pieces (runs of
    spaces, tabs, newlines; HTML tags) are split out of the text first, as HF tokenizers does with
    added tokens and llama.cpp with user-defined ones; sentencepiece encodes the text between them.
Metric: exact id equality on every string (tolerance: zero mismatches).
"""
import json
import os
import pathlib
import re
import struct
import subprocess

import gguf
import pytest
from tokenizers import Tokenizer

from test_chat_templates import CONVERSATIONS, jinja_render
from test_tokenizer_parity import build_corpus, encode_all

CACHE = pathlib.Path(os.environ.get("QWEN_CACHE") or "~/.cache/qwen.cu").expanduser() / "models"
QWEN25_MISSING = ["<tool_response>", "</tool_response>", "<think>", "</think>"]


def cached(name):
    path = CACHE / f"{name}.gguf"
    if not path.is_file():
        pytest.skip(f"{path} not cached: run `python3 scripts/fetch_model.py {name}`")
    return path


class Vocab:
    """tokenizer.ggml.* of a GGUF, read with the PyPI gguf reader."""

    def __init__(self, path):
        fields = gguf.GGUFReader(str(path)).fields
        self.fields = fields

        def arr(key):
            f = fields[key]
            return [f.parts[i] for i in f.data]

        self.tokens = [bytes(t).decode("utf-8") for t in arr("tokenizer.ggml.tokens")]
        self.types = [int(t[0]) for t in arr("tokenizer.ggml.token_type")]
        self.scores = [float(t[0]) for t in arr("tokenizer.ggml.scores")] if "tokenizer.ggml.scores" in fields else []
        self.merges = [bytes(m).decode("utf-8") for m in arr("tokenizer.ggml.merges")] \
            if "tokenizer.ggml.merges" in fields else []

    def scalar(self, key, default=None):
        return self.fields[key].parts[-1][0] if key in self.fields else default

    def string(self, key):
        return bytes(self.fields[key].parts[-1]).decode("utf-8")


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


def assert_ids_equal(texts, ours, ref, label):
    bad = [i for i in range(len(texts)) if ours[i] != ref[i]]
    detail = "\n".join(f"  {texts[i][:60]!r}\n    ours {ours[i][:30]}\n    ref  {ref[i][:30]}" for i in bad[:8])
    assert not bad, f"{label}: {len(bad)} of {len(texts)} strings differ:\n{detail}"


@pytest.mark.parametrize("special", [False, True], ids=["plain", "parse_special"])
def test_qwen25_gguf_matches_hf(bin_dir, tokenizer_json, corpus, special):
    path = cached("qwen2.5-coder-0.5b")
    texts = [s for s in corpus if not any(t in s for t in QWEN25_MISSING)]
    control = {i for i, ty in enumerate(Vocab(path).types) if ty == gguf.TokenType.CONTROL}
    tj = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    for a in tj["added_tokens"]:
        a["special"] = a["id"] in control
    hf = Tokenizer.from_str(json.dumps(tj))
    hf.encode_special_tokens = not special
    ref = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    assert_ids_equal(texts, encode_all(bin_dir, path, texts, special), ref, "qwen2.5-coder")


def test_qwen25_gguf_chat_template(bin_dir, tokenizer_json):
    path = cached("qwen2.5-coder-0.5b")
    source = Vocab(path).string("tokenizer.chat_template")
    hf = Tokenizer.from_file(str(tokenizer_json))
    lines = "".join(json.dumps({"messages": c, "add_generation_prompt": True}) + "\n" for c in CONVERSATIONS)
    proc = subprocess.run([str(bin_dir / "qwen-tokenize"), "-m", str(path), "--chat", "-"], input=lines,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for conv, line in zip(CONVERSATIONS, proc.stdout.split("\n")):
        got = json.loads(line)
        want = jinja_render(source, conv, True, {})
        assert got.get("text") == want.get("text"), (conv, got, want)
        if not any(t in want["text"] for t in QWEN25_MISSING):
            assert got["ids"] == hf.encode(want["text"], add_special_tokens=False).ids


def test_smollm2_gguf_matches_hf(bin_dir, corpus):
    path = cached("smollm2-135m")
    v = Vocab(path)
    normal = {t: i for i, (t, ty) in enumerate(zip(v.tokens, v.types)) if ty == gguf.TokenType.NORMAL}
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, (t, ty) in enumerate(zip(v.tokens, v.types)) if ty == gguf.TokenType.CONTROL]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
          "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
              {"type": "Digits", "individual_digits": True}, byte_level]},
          "post_processor": None, "decoder": dict(byte_level),
          "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                    "vocab": normal, "merges": v.merges}}
    hf = Tokenizer.from_str(json.dumps(tj))
    hf.encode_special_tokens = True
    ref = [e.ids for e in hf.encode_batch(corpus, add_special_tokens=False)]
    assert_ids_equal(corpus, encode_all(bin_dir, path, corpus, special=False), ref, "smollm2")


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number, wire, payload):
    key = _varint((number << 3) | wire)
    if wire == 0:
        return key + _varint(payload)
    if wire == 5:
        return key + struct.pack("<f", payload)
    return key + _varint(len(payload)) + payload


def sentencepiece_proto(v):
    """A sentencepiece ModelProto (BPE, byte fallback, identity normaliser) with the GGUF's pieces.
    Field numbers from sentencepiece_model.proto: pieces 1 {piece 1, score 2, type 3}, trainer_spec 2
    {model_type 3, vocab_size 4, byte_fallback 35, unk/bos/eos/pad id 40..43}, normalizer_spec 3
    {name 1, add_dummy_prefix 3, remove_extra_whitespaces 4}. The unk piece gets type UNKNOWN
    (sentencepiece requires one; llama.cpp's converter wrote Gemma's as CONTROL)."""
    ids = [int(v.scalar(f"tokenizer.ggml.{k}_token_id", -1)) for k in ("unknown", "bos", "eos", "padding")]
    types = [gguf.TokenType.UNKNOWN if i == ids[0] else ty for i, ty in enumerate(v.types)]
    pieces = b"".join(
        _field(1, 2, _field(1, 2, t.encode("utf-8")) + _field(2, 5, s) + _field(3, 0, ty))
        for t, s, ty in zip(v.tokens, v.scores, types))
    trainer = _field(3, 0, 2) + _field(4, 0, len(v.tokens)) + _field(35, 0, 1) + b"".join(
        _field(40 + k, 0, i & 0xFFFFFFFFFFFFFFFF) for k, i in enumerate(ids))
    normalizer = _field(1, 2, b"identity") + _field(3, 0, int(bool(v.scalar("tokenizer.ggml.add_space_prefix", True)))) \
        + _field(4, 0, 0)
    return pieces + _field(2, 2, trainer) + _field(3, 2, normalizer)


def test_gemma3_gguf_matches_sentencepiece(bin_dir, corpus):
    spm = pytest.importorskip("sentencepiece")
    path = cached("gemma3-270m")
    v = Vocab(path)
    sp = spm.SentencePieceProcessor(model_proto=sentencepiece_proto(v))
    assert sp.get_piece_size() == len(v.tokens)
    texts = [s for s in corpus if "\0" not in s]  # sentencepiece stops at NUL
    user = {t: i for i, (t, ty) in enumerate(zip(v.tokens, v.types)) if ty == gguf.TokenType.USER_DEFINED}
    # Longest first: Python's alternation takes the first alternative that matches at the leftmost
    # position, which makes this leftmost-longest.
    splitter = re.compile("|".join(re.escape(t) for t in sorted(user, key=len, reverse=True)))

    def reference(text):
        ids, pos = [], 0
        for match in splitter.finditer(text):
            ids += sp.encode(text[pos:match.start()]) + [user[match.group()]]
            pos = match.end()
        return ids + sp.encode(text[pos:])

    ref = [reference(s) for s in texts]
    assert_ids_equal(texts, encode_all(bin_dir, path, texts, special=False), ref, "gemma3")
