#!/usr/bin/env python3
"""Writes a synthetic GGUF model with seeded random weights.

Any shape, architecture (qwen2, qwen3, llama) and weight type:
  - F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 via gguf.quants.quantize;
  - Q2_K, Q3_K, Q4_K, Q5_K, Q6_K as random valid blocks written as raw bytes: every byte random
    except the fp16 super-block scales, which are set so the dequantized tensor has the wanted
    standard deviation (finite, never NaN/Inf).
2-D weights take --type (token_embd may take --embd-type); norm weights and biases stay F32.
--type Q4_K_M / Q5_K_M write llama-quantize's mix of those names (output Q6_K; attn_v and ffn_down
Q6_K in the "more bits" layers, the base K type elsewhere) and set general.file_type.
--random-blocks fills every type with random valid blocks (as the K-quants always are) instead
of quantizing normal weights: benchmark files of 7B-32B shapes in seconds rather than hours.
The file is written tensor by tensor (streaming): a 14 GiB 7B F16 file never sits in memory.
With --vocab tokenizer.json the real tokenizer is added (scripts/gguf_vocab.py); llama.cpp needs it
(a file without tokenizer.ggml.model fails to load there), so make a file for a side-by-side run with it.
RoPE scaling: --rope-scaling linear|yarn with --rope-factor (and --rope-orig-ctx, --rope-attn-factor,
--yarn-beta-fast/--yarn-beta-slow/--yarn-ext-factor) writes the <arch>.rope.scaling.* keys as
llama.cpp does; --llama3-rope FACTOR,LOW,HIGH,ORIG_CTX writes a rope_freqs.weight tensor holding HF's
llama3 rope_scaling as per-pair frequency divisors, as llama.cpp's converter does.

Examples:
  python3 scripts/make_model.py --arch qwen3 --type Q4_K -o /tmp/tiny.gguf
  python3 scripts/make_model.py --preset qwen2.5-0.5b --type Q8_0 -o /tmp/q05b.gguf \
      --vocab "$(python3 scripts/tokenizer_data.py)/tokenizer.json"
  python3 scripts/make_model.py --preset qwen2.5-7b --type Q4_K_M --random-blocks -o /tmp/q7b.gguf
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
    "qwen2.5-7b": dict(arch="qwen2", n_embd=3584, n_layer=28, n_head=28, n_head_kv=4, n_ff=18944,
                       n_vocab=152064, head_dim=None, rope_theta=1e6, eps=1e-6, tied=False,
                       n_ctx_train=32768),
    "qwen2.5-14b": dict(arch="qwen2", n_embd=5120, n_layer=48, n_head=40, n_head_kv=8, n_ff=13824,
                        n_vocab=152064, head_dim=None, rope_theta=1e6, eps=1e-6, tied=False,
                        n_ctx_train=32768),
    "qwen2.5-32b": dict(arch="qwen2", n_embd=5120, n_layer=64, n_head=40, n_head_kv=8, n_ff=27648,
                        n_vocab=152064, head_dim=None, rope_theta=1e6, eps=1e-6, tied=False,
                        n_ctx_train=32768),
}

DEFAULTS = dict(arch="qwen2", n_embd=256, n_layer=2, n_head=4, n_head_kv=2, n_ff=512, n_vocab=512,
                head_dim=None, rope_theta=1e6, eps=1e-6, tied=False, n_ctx_train=4096)

SIMPLE_TYPES = {"F32": QT.F32, "F16": QT.F16, "BF16": QT.BF16, "Q8_0": QT.Q8_0, "Q4_0": QT.Q4_0,
                "Q4_1": QT.Q4_1, "Q5_0": QT.Q5_0, "Q5_1": QT.Q5_1}
# K-quant block: byte offsets of the fp16 scales d and (where present) dmin inside a block.
K_TYPES = {"Q2_K": (QT.Q2_K, 80, 82), "Q3_K": (QT.Q3_K, 108, None), "Q4_K": (QT.Q4_K, 0, 2),
           "Q5_K": (QT.Q5_K, 0, 2), "Q6_K": (QT.Q6_K, 208, None)}
# llama-quantize's mixes: (base K type, llama ftype number for general.file_type).
MIXES = {"Q4_K_M": ("Q4_K", 15), "Q5_K_M": ("Q5_K", 17)}
ALL_TYPES = list(SIMPLE_TYPES) + list(K_TYPES) + list(MIXES)


def _use_more_bits(layer, n_layer):
    """llama-quantize's layers that get the higher type in the _M mixes: the first and last
    eighth, and every third layer in between."""
    return layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2


# llama-quantize's fallback for a K type whose rows are not a multiple of 256 elements.
K_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def tensor_type(type_name, tensor, layer, n_layer, cols):
    """The type of one 2-D weight (tensor: GGUF base name such as "attn_v"; rows of `cols`
    elements) under --type; a mix falls back per K_FALLBACK as llama-quantize does."""
    if type_name not in MIXES:
        return type_name
    t = MIXES[type_name][0]
    if tensor == "output" or (tensor in ("attn_v", "ffn_down") and _use_more_bits(layer, n_layer)):
        t = "Q6_K"
    return K_FALLBACK[t] if cols % 256 else t


SAMPLE_BLOCKS = 65536  # blocks whose std sets a random tensor's scale (all of a small tensor)


def _random_bytes(rng, shape):
    """Uniform random bytes (writable), at memory speed."""
    return np.frombuffer(bytearray(rng.bytes(int(np.prod(shape)))), dtype=np.uint8).reshape(shape)


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

    # Dequantized values are linear in (d, dmin): measure at 1.0 (on at most SAMPLE_BLOCKS
    # blocks), then rescale.
    set_scales(1.0)
    sample = min(n_blocks, SAMPLE_BLOCKS)
    measured = float(np.std(gguf.quants.dequantize(raw[:sample].reshape(sample, -1), qtype)))
    set_scales(std / measured if measured > 0 else 1.0)
    return raw.reshape(rows, -1), qtype


# Byte offsets of the fp16 scale (and min) inside a legacy block, for random valid blocks.
SIMPLE_SCALES = {"Q8_0": (0, None), "Q4_0": (0, None), "Q4_1": (0, 2), "Q5_0": (0, None), "Q5_1": (0, 2)}


def _random_blocks(rng, rows, cols, type_name, std):
    """Random valid bytes [rows][row_bytes] of a quantized type (dequantized std ~ std), or a
    uniform float tensor of std ~ std for F32/F16/BF16; fast enough for 7B-32B shapes."""
    if type_name in K_TYPES:
        return _kquant_blocks(rng, rows, cols, type_name, std)
    qtype = SIMPLE_TYPES[type_name]
    if qtype in (QT.F32, QT.F16, QT.BF16):
        # int16 uniform on [-2^15, 2^15) has std 2^15/sqrt(3).
        w = rng.integers(-32768, 32768, size=(rows, cols), dtype=np.int16).astype(np.float32)
        w *= np.float32(std * 3 ** 0.5 / 32768)
        if qtype == QT.F32:
            return w, qtype
        if qtype == QT.F16:
            return w.astype(np.float16), qtype
        return (w.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, -1), qtype
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    if cols % block_size:
        raise ValueError(f"{type_name} needs rows of a multiple of {block_size} elements, got {cols}")
    n_blocks = rows * cols // block_size
    raw = _random_bytes(rng, (n_blocks, block_bytes))
    d_off, m_off = SIMPLE_SCALES[type_name]
    sample = min(n_blocks, SAMPLE_BLOCKS)

    def set_scales(d):
        raw[:, d_off:d_off + 2] = np.full(n_blocks, d, dtype=np.float16).view(np.uint8).reshape(n_blocks, 2)
        if m_off is not None:  # min = -d * (levels / 2): centred values
            levels = 16 if type_name == "Q4_1" else 32
            m = np.full(n_blocks, -d * levels / 2, dtype=np.float16)
            raw[:, m_off:m_off + 2] = m.view(np.uint8).reshape(n_blocks, 2)

    set_scales(1.0)
    measured = float(np.std(gguf.quants.dequantize(raw[:sample].reshape(sample, -1), qtype)))
    set_scales(std / measured if measured > 0 else 1.0)
    return raw.reshape(rows, -1), qtype


def _matrix(rng, rows, cols, type_name, std, random_blocks):
    """W [rows][cols] (GGUF ne0 = cols) of the given type: (array, ggml type)."""
    if type_name in K_TYPES or random_blocks:
        return _random_blocks(rng, rows, cols, type_name, std)
    qtype = SIMPLE_TYPES[type_name]
    w = (rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(std)).astype(np.float32)
    if qtype == QT.F32:
        return w, qtype
    if qtype == QT.F16:
        return w.astype(np.float16), qtype
    block_size = gguf.GGML_QUANT_SIZES[qtype][0]
    if cols % block_size:
        raise ValueError(f"{type_name} needs rows of a multiple of {block_size}, got {cols}")
    return gguf.quants.quantize(w, qtype), qtype


def _nbytes(rows, cols, type_name):
    qtype = K_TYPES[type_name][0] if type_name in K_TYPES else SIMPLE_TYPES[type_name]
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    return rows * cols // block_size * block_bytes, qtype


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
               embd_type=None, seed=0, vocab=None, vocab_config=None, random_blocks=False, rope_scaling=None,
               llama3_rope=None, pooling=None):
    """Writes the model to `path`, one tensor at a time. head_dim defaults to n_embd // n_head.
    rope_scaling: a dict of ROPE_SCALING_KEYS entries (e.g. type="yarn", factor=4.0); llama3_rope:
    a dict of llama3_rope_freqs' scaling arguments (factor, low_freq_factor, high_freq_factor,
    original_context_length); pooling: "mean", "cls" or "last" writes <arch>.pooling_type (an
    embedder's)."""
    if arch not in ("qwen2", "qwen3", "llama"):
        raise ValueError(f"unknown arch {arch!r} (qwen2, qwen3, llama)")
    for t in (type, embd_type or type):
        if t not in ALL_TYPES:
            raise ValueError(f"unknown weight type {t!r}; one of {', '.join(ALL_TYPES)}")
    head_dim = head_dim or n_embd // n_head
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_name(f"synthetic-{arch}-{type}")
    if type in MIXES:  # a single type needs no name: tools name a file by its most common type
        writer.add_file_type(MIXES[type][1])
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
    if pooling is not None:
        writer.add_uint32(f"{arch}.pooling_type", {"mean": 1, "cls": 2, "last": 3}[pooling])
    if vocab:
        from gguf_vocab import add_tokenizer
        add_tokenizer(writer, vocab, vocab_config, pre="qwen2", n_vocab=n_vocab)

    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    # The tensors in file order: (name, shape-and-type info, maker). Makers run in this order
    # while streaming, so a seed gives the same weights as ever.
    plan = []

    def vec(name, n, mean, std):
        plan.append((name, ((n,), np.float32, 4 * n, None),
                     lambda: (mean + std * rng.standard_normal(n)).astype(np.float32)))

    def mat(name, rows, cols, type_name, std):
        nbytes, qtype = _nbytes(rows, cols, type_name)
        shape = (rows, cols) if qtype in (QT.F32, QT.F16) else (rows, nbytes // rows)
        dtype = {QT.F32: np.float32, QT.F16: np.float16}.get(qtype, np.uint8)
        raw = None if qtype in (QT.F32, QT.F16) else qtype
        plan.append((name, (shape, dtype, nbytes, raw),
                     lambda: _matrix(rng, rows, cols, type_name, std, random_blocks)[0]))

    def ty(tensor, cols, layer=0):
        return tensor_type(type, tensor, layer, n_layer, cols)

    # Matrices get std 1/sqrt(fan_in) so activations stay O(1) through the layers.
    mat("token_embd.weight", n_vocab, n_embd, embd_type or ty("token_embd", n_embd), 1.0)
    if llama3_rope:
        freqs = llama3_rope_freqs(head_dim, rope_theta, **llama3_rope)
        plan.append(("rope_freqs.weight", (freqs.shape, np.float32, freqs.nbytes, None), lambda: freqs))
    vec("output_norm.weight", n_embd, 1.0, 0.1)
    if not tied:
        mat("output.weight", n_vocab, n_embd, ty("output", n_embd), n_embd ** -0.5)
    for l in range(n_layer):
        p = f"blk.{l}."
        vec(p + "attn_norm.weight", n_embd, 1.0, 0.1)
        mat(p + "attn_q.weight", q_dim, n_embd, ty("attn_q", n_embd, l), n_embd ** -0.5)
        mat(p + "attn_k.weight", kv_dim, n_embd, ty("attn_k", n_embd, l), n_embd ** -0.5)
        mat(p + "attn_v.weight", kv_dim, n_embd, ty("attn_v", n_embd, l), n_embd ** -0.5)
        if arch == "qwen2":
            vec(p + "attn_q.bias", q_dim, 0.0, 0.2)
            vec(p + "attn_k.bias", kv_dim, 0.0, 0.2)
            vec(p + "attn_v.bias", kv_dim, 0.0, 0.2)
        if arch == "qwen3":
            vec(p + "attn_q_norm.weight", head_dim, 1.0, 0.1)
            vec(p + "attn_k_norm.weight", head_dim, 1.0, 0.1)
        mat(p + "attn_output.weight", n_embd, q_dim, ty("attn_output", q_dim, l), q_dim ** -0.5)
        vec(p + "ffn_norm.weight", n_embd, 1.0, 0.1)
        mat(p + "ffn_gate.weight", n_ff, n_embd, ty("ffn_gate", n_embd, l), n_embd ** -0.5)
        mat(p + "ffn_up.weight", n_ff, n_embd, ty("ffn_up", n_embd, l), n_embd ** -0.5)
        mat(p + "ffn_down.weight", n_embd, n_ff, ty("ffn_down", n_ff, l), n_ff ** -0.5)

    for name, (shape, dtype, nbytes, raw), _ in plan:
        writer.add_tensor_info(name, shape, np.dtype(dtype), nbytes, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, (shape, _, nbytes, _), make in plan:
        data = make()
        if data.nbytes != nbytes:
            raise AssertionError(f"{name}: made {data.nbytes} bytes, planned {nbytes}")
        writer.write_tensor_data(data)
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
    ap.add_argument("--random-blocks", action="store_true",
                    help="random valid blocks for every type (fast; for benchmark files)")
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
    ap.add_argument("--pooling", choices=["mean", "cls", "last"], help="<arch>.pooling_type (an embedder's)")
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
               vocab_config=vocab_config, random_blocks=args.random_blocks, rope_scaling=rope_scaling,
               llama3_rope=llama3_rope, pooling=args.pooling, **opts)


if __name__ == "__main__":
    main()
