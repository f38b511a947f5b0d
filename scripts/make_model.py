#!/usr/bin/env python3
"""Writes a synthetic GGUF model with seeded random weights.

Any shape, architecture (qwen2, qwen3, llama) and weight type:
  - F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 via gguf.quants.quantize;
  - Q2_K, Q3_K, Q4_K, Q5_K, Q6_K as random valid blocks written as raw bytes: every byte random
    except the fp16 super-block scales, which are set so the dequantized tensor has the wanted
    standard deviation (finite, never NaN/Inf).
2-D weights take --type (token_embd may take --embd-type); norm weights and biases stay F32.
With --vocab tokenizer.json the real tokenizer is added (scripts/gguf_vocab.py).
RoPE scaling: --rope-scaling linear|yarn with --rope-factor (and --rope-orig-ctx, --rope-attn-factor,
--yarn-beta-fast/--yarn-beta-slow/--yarn-ext-factor) writes the <arch>.rope.scaling.* keys as
llama.cpp does; --llama3-rope FACTOR,LOW,HIGH,ORIG_CTX writes a rope_freqs.weight tensor holding HF's
llama3 rope_scaling as per-pair frequency divisors, as llama.cpp's converter does.

Examples:
  python3 scripts/make_model.py --arch qwen3 --type Q4_K -o /tmp/tiny.gguf
  python3 scripts/make_model.py --preset qwen2.5-0.5b --type Q8_0 -o /tmp/q05b.gguf \
      --vocab "$(python3 scripts/tokenizer_data.py)/tokenizer.json"
Library use: make_model(path, **options) with the same names as the flags.
"""
import argparse
import pathlib
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

PRESETS = {
    # The benchmark shape (docs/ARCHITECTURE.md, "Benchmark models").
    "qwen2.5-0.5b": dict(arch="qwen2", n_embd=896, n_layer=24, n_head=14, n_head_kv=2, n_ff=4864,
                         n_vocab=151936, head_dim=None, rope_theta=1e6, eps=1e-6, tied=True,
                         n_ctx_train=32768),
}

DEFAULTS = dict(arch="qwen2", n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=512,
                head_dim=None, rope_theta=1e6, eps=1e-6, tied=False, n_ctx_train=4096)

SIMPLE_TYPES = {"F32": QT.F32, "F16": QT.F16, "BF16": QT.BF16, "Q8_0": QT.Q8_0, "Q4_0": QT.Q4_0,
                "Q4_1": QT.Q4_1, "Q5_0": QT.Q5_0, "Q5_1": QT.Q5_1}
# K-quant block: byte offsets of the fp16 scales d and (where present) dmin inside a block.
K_TYPES = {"Q2_K": (QT.Q2_K, 80, 82), "Q3_K": (QT.Q3_K, 108, None), "Q4_K": (QT.Q4_K, 0, 2),
           "Q5_K": (QT.Q5_K, 0, 2), "Q6_K": (QT.Q6_K, 208, None)}
ALL_TYPES = list(SIMPLE_TYPES) + list(K_TYPES)


def _kquant_blocks(rng, rows, cols, type_name, std):
    """Random valid K-quant bytes [rows][cols/256*block_bytes] whose dequantized std is ~std."""
    qtype, d_off, dmin_off = K_TYPES[type_name]
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    if cols % block_size:
        raise ValueError(f"{type_name} needs rows of a multiple of {block_size} elements, got {cols}")
    n_blocks = rows * cols // block_size
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)

    def set_scales(value):
        h = np.full(n_blocks, value, dtype=np.float16).view(np.uint8).reshape(n_blocks, 2)
        raw[:, d_off:d_off + 2] = h
        if dmin_off is not None:
            raw[:, dmin_off:dmin_off + 2] = h

    # Dequantized values are linear in (d, dmin): measure at 1.0, then rescale.
    set_scales(1.0)
    measured = float(np.std(gguf.quants.dequantize(raw.reshape(rows, -1), qtype)))
    set_scales(std / measured if measured > 0 else 1.0)
    return raw.reshape(rows, -1), qtype


def _add_matrix(writer, rng, name, rows, cols, type_name, std):
    """Adds W [rows][cols] (GGUF ne0 = cols) of the given type."""
    if type_name in K_TYPES:
        data, qtype = _kquant_blocks(rng, rows, cols, type_name, std)
        writer.add_tensor(name, data, raw_dtype=qtype)
        return
    qtype = SIMPLE_TYPES[type_name]
    w = (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)).astype(np.float32)
    if qtype == QT.F32:
        writer.add_tensor(name, w)
    elif qtype == QT.F16:
        writer.add_tensor(name, w.astype(np.float16))
    else:
        block_size = gguf.GGML_QUANT_SIZES[qtype][0]
        if cols % block_size:
            raise ValueError(f"{name}: {type_name} needs rows of a multiple of {block_size}, got {cols}")
        writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)


# GGUF key suffix (after "<arch>.rope.scaling.") of each rope_scaling entry, and its value type.
ROPE_SCALING_KEYS = {"type": ("type", gguf.GGUFValueType.STRING),
                     "factor": ("factor", gguf.GGUFValueType.FLOAT32),
                     "original_context_length": ("original_context_length", gguf.GGUFValueType.UINT32),
                     "attn_factor": ("attn_factor", gguf.GGUFValueType.FLOAT32),
                     "beta_fast": ("yarn_beta_fast", gguf.GGUFValueType.FLOAT32),
                     "beta_slow": ("yarn_beta_slow", gguf.GGUFValueType.FLOAT32),
                     "ext_factor": ("yarn_ext_factor", gguf.GGUFValueType.FLOAT32)}


def llama3_rope_freqs(head_dim, rope_theta, factor, low_freq_factor, high_freq_factor, original_context_length):
    """Per-pair divisors of the rope frequencies that HF's llama3 rope_type applies: 1 for short
    wavelengths, `factor` for long ones, and a smooth blend between (float32 [head_dim / 2])."""
    inv_freq = 1.0 / rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / inv_freq
    smooth = (original_context_length / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = 1.0 / ((1 - smooth) / factor + smooth)
    divisor = np.where(wavelen < original_context_length / high_freq_factor, 1.0,
                       np.where(wavelen > original_context_length / low_freq_factor, factor, blended))
    return divisor.astype(np.float32)


def make_model(path, arch="qwen2", n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=512,
               head_dim=None, rope_theta=1e6, eps=1e-6, tied=False, n_ctx_train=4096, type="F32",
               embd_type=None, seed=0, vocab=None, vocab_config=None, rope_scaling=None, llama3_rope=None):
    """Writes the model to `path`. head_dim defaults to n_embd // n_head. rope_scaling: a dict of
    ROPE_SCALING_KEYS entries (e.g. type="yarn", factor=4.0); llama3_rope: a dict of
    llama3_rope_freqs' scaling arguments (factor, low_freq_factor, high_freq_factor,
    original_context_length)."""
    if arch not in ("qwen2", "qwen3", "llama"):
        raise ValueError(f"unknown arch {arch!r} (qwen2, qwen3, llama)")
    for t in (type, embd_type or type):
        if t not in ALL_TYPES:
            raise ValueError(f"unknown weight type {t!r}; one of {', '.join(ALL_TYPES)}")
    head_dim = head_dim or n_embd // n_head
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_name(f"synthetic-{arch}-{type}")
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope_theta)
    for name, value in (rope_scaling or {}).items():
        if name not in ROPE_SCALING_KEYS:
            raise ValueError(f"unknown rope_scaling entry {name!r}; one of {', '.join(ROPE_SCALING_KEYS)}")
        suffix, vtype = ROPE_SCALING_KEYS[name]
        writer.add_key_value(f"{arch}.rope.scaling.{suffix}", value, vtype)
    writer.add_layer_norm_rms_eps(eps)
    if vocab:
        from gguf_vocab import add_tokenizer
        add_tokenizer(writer, vocab, vocab_config, pre="qwen2", n_vocab=n_vocab)

    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim

    def vec(name, n, mean, std):
        writer.add_tensor(name, (mean + std * rng.standard_normal(n)).astype(np.float32))

    # Matrices get std 1/sqrt(fan_in) so activations stay O(1) through the layers.
    _add_matrix(writer, rng, "token_embd.weight", n_vocab, n_embd, embd_type or type, 1.0)
    if llama3_rope:
        writer.add_tensor("rope_freqs.weight", llama3_rope_freqs(head_dim, rope_theta, **llama3_rope))
    vec("output_norm.weight", n_embd, 1.0, 0.1)
    if not tied:
        _add_matrix(writer, rng, "output.weight", n_vocab, n_embd, type, n_embd ** -0.5)
    for l in range(n_layer):
        p = f"blk.{l}."
        vec(p + "attn_norm.weight", n_embd, 1.0, 0.1)
        _add_matrix(writer, rng, p + "attn_q.weight", q_dim, n_embd, type, n_embd ** -0.5)
        _add_matrix(writer, rng, p + "attn_k.weight", kv_dim, n_embd, type, n_embd ** -0.5)
        _add_matrix(writer, rng, p + "attn_v.weight", kv_dim, n_embd, type, n_embd ** -0.5)
        if arch == "qwen2":
            vec(p + "attn_q.bias", q_dim, 0.0, 0.2)
            vec(p + "attn_k.bias", kv_dim, 0.0, 0.2)
            vec(p + "attn_v.bias", kv_dim, 0.0, 0.2)
        if arch == "qwen3":
            vec(p + "attn_q_norm.weight", head_dim, 1.0, 0.1)
            vec(p + "attn_k_norm.weight", head_dim, 1.0, 0.1)
        _add_matrix(writer, rng, p + "attn_output.weight", n_embd, q_dim, type, q_dim ** -0.5)
        vec(p + "ffn_norm.weight", n_embd, 1.0, 0.1)
        _add_matrix(writer, rng, p + "ffn_gate.weight", n_ff, n_embd, type, n_embd ** -0.5)
        _add_matrix(writer, rng, p + "ffn_up.weight", n_ff, n_embd, type, n_embd ** -0.5)
        _add_matrix(writer, rng, p + "ffn_down.weight", n_embd, n_ff, type, n_ff ** -0.5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a named shape; other flags override it")
    ap.add_argument("--arch", choices=["qwen2", "qwen3", "llama"])
    for key in ("n_embd", "n_layer", "n_head", "n_head_kv", "n_ff", "n_vocab", "head_dim", "n_ctx_train"):
        ap.add_argument("--" + key.replace("_", "-"), type=int)
    ap.add_argument("--rope-theta", type=float)
    ap.add_argument("--eps", type=float)
    ap.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                    help="tie the output to token_embd (no output.weight)")
    ap.add_argument("--type", default="F32", choices=ALL_TYPES, help="type of the 2-D weights")
    ap.add_argument("--embd-type", choices=ALL_TYPES, help="type of token_embd (default: --type)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", help="tokenizer.json to embed (real Qwen vocabulary)")
    ap.add_argument("--vocab-config", help="tokenizer_config.json (specials, chat template)")
    ap.add_argument("--rope-scaling", choices=["none", "linear", "yarn"], help="<arch>.rope.scaling.type")
    ap.add_argument("--rope-factor", type=float, help="<arch>.rope.scaling.factor")
    ap.add_argument("--rope-orig-ctx", type=int, help="<arch>.rope.scaling.original_context_length")
    ap.add_argument("--rope-attn-factor", type=float, help="<arch>.rope.scaling.attn_factor")
    ap.add_argument("--yarn-beta-fast", type=float, help="<arch>.rope.scaling.yarn_beta_fast")
    ap.add_argument("--yarn-beta-slow", type=float, help="<arch>.rope.scaling.yarn_beta_slow")
    ap.add_argument("--yarn-ext-factor", type=float, help="<arch>.rope.scaling.yarn_ext_factor")
    ap.add_argument("--llama3-rope", metavar="FACTOR,LOW,HIGH,ORIG_CTX",
                    help="write rope_freqs.weight for HF's llama3 rope_scaling, e.g. 8,1,4,8192")
    args = ap.parse_args()
    opts = dict(DEFAULTS)
    if args.preset:
        opts.update(PRESETS[args.preset])
    for key in list(DEFAULTS):
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
    vocab_config = args.vocab_config
    if args.vocab and vocab_config is None:
        guess = pathlib.Path(args.vocab).with_name("tokenizer_config.json")
        vocab_config = str(guess) if guess.is_file() else None
    flags = dict(type=args.rope_scaling, factor=args.rope_factor, original_context_length=args.rope_orig_ctx,
                 attn_factor=args.rope_attn_factor, beta_fast=args.yarn_beta_fast, beta_slow=args.yarn_beta_slow,
                 ext_factor=args.yarn_ext_factor)
    rope_scaling = {k: v for k, v in flags.items() if v is not None}
    llama3_rope = None
    if args.llama3_rope:
        parts = args.llama3_rope.split(",")
        if len(parts) != 4:
            ap.error(f"--llama3-rope wants FACTOR,LOW,HIGH,ORIG_CTX, got {args.llama3_rope!r}")
        llama3_rope = dict(factor=float(parts[0]), low_freq_factor=float(parts[1]),
                           high_freq_factor=float(parts[2]), original_context_length=int(parts[3]))
    make_model(args.output, type=args.type, embd_type=args.embd_type, seed=args.seed, vocab=args.vocab,
               vocab_config=vocab_config, rope_scaling=rope_scaling, llama3_rope=llama3_rope, **opts)


if __name__ == "__main__":
    main()
