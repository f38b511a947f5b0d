#!/usr/bin/env python3
"""Writes the tokenizer of a HF tokenizer.json (+ tokenizer_config.json) as GGUF metadata.

Library use (synthetic models get a real vocabulary):
    from gguf_vocab import add_tokenizer
    add_tokenizer(writer, "tokenizer.json", "tokenizer_config.json", pre="qwen2")

CLI (a tensor-less GGUF that carries only the tokenizer, enough for qwen-tokenize):
    python3 scripts/gguf_vocab.py tokenizer.json --config tokenizer_config.json -o vocab.gguf

The layout follows llama.cpp's converter: tokenizer.ggml.model = "gpt2" (byte-level BPE),
tokens in id order, token types NORMAL for the BPE vocabulary, CONTROL for added tokens marked
special and USER_DEFINED for the other added tokens, merges as "left right" strings in rank order,
ids that neither the vocabulary nor the added tokens cover filled with "[PAD<id>]" (UNUSED).
"""
import argparse
import json
import pathlib

import gguf


def _token_text(value):
    """tokenizer_config.json writes special tokens as a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def load_vocab(tokenizer_json_path, n_vocab=None):
    """Returns (tokens, token_types, merges, added) from a byte-level BPE tokenizer.json."""
    tj = json.loads(pathlib.Path(tokenizer_json_path).read_text(encoding="utf-8"))
    model = tj["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{tokenizer_json_path}: model.type is {model.get('type')!r}, expected 'BPE'")
    vocab = model["vocab"]
    added = tj.get("added_tokens", [])
    size = max([*vocab.values(), *(a["id"] for a in added)]) + 1
    if n_vocab is not None:
        if n_vocab < size:
            raise ValueError(f"n_vocab {n_vocab} is smaller than the tokenizer's {size} ids")
        size = n_vocab
    tokens = [None] * size
    types = [gguf.TokenType.UNUSED] * size
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = gguf.TokenType.NORMAL
    for a in added:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = gguf.TokenType.CONTROL if a.get("special") else gguf.TokenType.USER_DEFINED
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"[PAD{i}]"
    # Newer tokenizer.json files store merges as [left, right] pairs, older ones as "left right".
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in model["merges"]]
    return tokens, types, merges, {a["content"]: a["id"] for a in added}


def add_tokenizer(writer, tokenizer_json_path, tokenizer_config_path=None, pre="qwen2", n_vocab=None,
                  chat_template=None, bos_token=None):
    """Adds tokenizer.ggml.* (+ tokenizer.chat_template) to a gguf.GGUFWriter.

    n_vocab pads the token list to the model's embedding rows (Qwen2.5: 151936).
    chat_template / bos_token (a token text) override what tokenizer_config.json says.
    Returns the number of tokens written.
    """
    tokens, types, merges, added = load_vocab(tokenizer_json_path, n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    config = {}
    if tokenizer_config_path is not None:
        config = json.loads(pathlib.Path(tokenizer_config_path).read_text(encoding="utf-8"))
    ids = {t: i for i, t in enumerate(tokens)}

    def special_id(key):
        text = _token_text(config.get(key))
        if text is None:
            return None
        if text not in ids:
            raise ValueError(f"{tokenizer_config_path}: {key} {text!r} is not in the vocabulary")
        return ids[text]

    if bos_token is not None:
        config["bos_token"] = bos_token
    if chat_template is not None:
        config["chat_template"] = chat_template
    eos = special_id("eos_token")
    if eos is None and "<|endoftext|>" in added:
        eos = added["<|endoftext|>"]
    bos, pad = special_id("bos_token"), special_id("pad_token")
    if bos is not None:
        writer.add_bos_token_id(bos)
    if eos is not None:
        writer.add_eos_token_id(eos)
    if pad is not None:
        writer.add_pad_token_id(pad)
    writer.add_add_bos_token(bool(config.get("add_bos_token", False)))
    writer.add_add_eos_token(bool(config.get("add_eos_token", False)))
    if config.get("chat_template"):
        writer.add_chat_template(config["chat_template"])
    return len(tokens)


def write_tokenizer_gguf(path, tokenizer_json_path, tokenizer_config_path=None, **kwargs):
    """Writes a tokenizer-only GGUF (no tensors); kwargs go to add_tokenizer."""
    writer = gguf.GGUFWriter(str(path), arch="qwen2")
    add_tokenizer(writer, tokenizer_json_path, tokenizer_config_path, **kwargs)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main():
    ap = argparse.ArgumentParser(description="Write a tokenizer-only GGUF from a HF tokenizer.json")
    ap.add_argument("tokenizer_json")
    ap.add_argument("--config", help="tokenizer_config.json (specials, chat template)")
    ap.add_argument("--pre", default="qwen2", help="tokenizer.ggml.pre value (default qwen2)")
    ap.add_argument("--n-vocab", type=int, help="pad the token list to this many ids")
    ap.add_argument("--chat-template-file", help="override tokenizer.chat_template with this file")
    ap.add_argument("--bos-token", help="text of the BOS token (overrides tokenizer_config.json)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    template = None
    if args.chat_template_file:
        template = pathlib.Path(args.chat_template_file).read_text(encoding="utf-8")
    write_tokenizer_gguf(args.output, args.tokenizer_json, args.config, pre=args.pre, n_vocab=args.n_vocab,
                         chat_template=template, bos_token=args.bos_token)


if __name__ == "__main__":
    main()
