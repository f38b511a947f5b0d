"""SentencePiece-style ("llama") tokenizer parity: qwen-tokenize vs the PyPI `sentencepiece` library.

A small BPE model with byte fallback is trained on the fly (fixed seed corpus, ~1 s), written to
GGUF the way llama.cpp's converter does (pieces, scores, token types, unk/bos/eos ids), and both
sides encode the parity corpus. Metric: exact id equality on every string and decode equal to
sentencepiece's decode (tolerance: zero mismatches). Needs `pip install sentencepiece`.
"""
import io
import json

import gguf
import pytest

from test_tokenizer_parity import build_corpus, encode_all, run_tool

spm = pytest.importorskip("sentencepiece")


def piece_type(sp, i):
    if sp.is_unknown(i):
        return gguf.TokenType.UNKNOWN
    if sp.is_control(i):
        return gguf.TokenType.CONTROL
    if sp.is_byte(i):
        return gguf.TokenType.BYTE
    if sp.is_unused(i):
        return gguf.TokenType.UNUSED
    return gguf.TokenType.NORMAL


@pytest.fixture(scope="module")
def corpus():
    # Text sentencepiece can take as is: no NUL (its trainer and encoder treat it as the end).
    return [s for s in build_corpus() if "\0" not in s]


@pytest.fixture(scope="module")
def spm_model(corpus):
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus[::2]), model_writer=proto, model_type="bpe", vocab_size=4000,
        byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, character_coverage=0.995, split_digits=True, seed_sentencepiece_size=100000,
        num_threads=1, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=proto.getvalue())


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory, spm_model):
    sp = spm_model
    path = tmp_path_factory.mktemp("spm") / "spm.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([sp.id_to_piece(i) for i in range(sp.get_piece_size())])
    writer.add_token_scores([sp.get_score(i) for i in range(sp.get_piece_size())])
    writer.add_token_types([int(piece_type(sp, i)) for i in range(sp.get_piece_size())])
    writer.add_unk_token_id(sp.unk_id())
    writer.add_bos_token_id(sp.bos_id())
    writer.add_eos_token_id(sp.eos_id())
    writer.add_add_bos_token(False)
    writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_ids_match_sentencepiece(bin_dir, spm_gguf, spm_model, corpus):
    ref = [spm_model.encode(s) for s in corpus]
    ours = encode_all(bin_dir, spm_gguf, corpus, special=False)
    bad = [i for i in range(len(corpus)) if ours[i] != ref[i]]
    detail = "\n".join(f"  {corpus[i][:60]!r}\n    ours {ours[i][:30]}\n    spm  {ref[i][:30]}" for i in bad[:8])
    assert not bad, f"{len(bad)} of {len(corpus)} strings differ from sentencepiece:\n{detail}"
    # Byte fallback and multi-piece merges both occur, or the test would not say much.
    byte_ids = {i for i in range(spm_model.get_piece_size()) if spm_model.is_byte(i)}
    assert any(i in byte_ids for ids in ref for i in ids)


def test_decode_matches_sentencepiece(bin_dir, spm_gguf, spm_model, corpus):
    ids = [spm_model.encode(s) for s in corpus]
    ours = run_tool(bin_dir, ["-m", str(spm_gguf), "--decode"], [json.dumps(x) + "\n" for x in ids])
    ref = [spm_model.decode(x) for x in ids]
    bad = [i for i in range(len(corpus)) if ours[i] != ref[i]]
    assert not bad, f"{len(bad)} decodes differ, first: {ours[bad[0]][:60]!r} vs {ref[bad[0]][:60]!r}"
