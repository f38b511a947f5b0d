"""The models of scripts/hf_compare.py: shapes, RoPE scaling, the transformers model, its GGUF twin
(one file per weight type) and the transformers fp32 logits in chunks of positions."""
from __future__ import annotations

import inspect
import pathlib
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_model import llama3_rope_freqs  # noqa: E402

# qwen2.5-0.5b: the benchmark shape of docs/ARCHITECTURE.md (Benchmark models). small: a model
# cheap enough for 40,000 positions in transformers fp32 and on the CPU: the real head dim and
# GQA ratio of Qwen2.5, a vocabulary of 32,768 so 40,000 rows of logits are 5.2 GB, not 24 GB.
SHAPES = {
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, head_dim=64),
    "small": dict(vocab_size=32768, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=64),
}
# Token ids drawn for the prompts: Qwen's ordinary tokens (below the specials) or the whole vocabulary.
TOKEN_LIMIT = {"qwen2.5-0.5b": 151643, "small": 32768}
TRAINED_CTX = 32768  # context_length of an unscaled model, as Qwen2.5's
ROPE_THETA = 1e6
RMS_EPS = 1e-6


@dataclass
class Rope:
    """One --rope-scaling spec as transformers and as the GGUF carry it."""
    spec: str
    hf: dict                     # rope_parameters / rope_scaling entries besides rope_theta
    hf_max_pos: int              # config.max_position_embeddings
    gguf_ctx: int                # <arch>.context_length
    gguf_keys: dict = field(default_factory=dict)  # <arch>.rope.scaling.<key>: value
    llama3: dict | None = None   # llama3_rope_freqs arguments: a rope_freqs.weight tensor
    ctx_max: int = 0             # positions qwen.cu accepts without --ctx-overflow (its n_ctx_max)


def parse_rope(spec):
    """none | linear:FACTOR | yarn:FACTOR[:ORIG_CTX] | llama3[:FACTOR:LOW:HIGH:ORIG_CTX]."""
    kind, *nums = spec.split(":")
    try:
        vals = [float(x) for x in nums]
    except ValueError:
        raise ValueError(f"--rope-scaling {spec!r}: {nums} are not numbers") from None
    if kind == "none" and not vals:
        return Rope(spec, {"rope_type": "default"}, TRAINED_CTX, TRAINED_CTX, ctx_max=TRAINED_CTX)
    if kind == "linear" and len(vals) == 1 and vals[0] >= 1:
        factor = vals[0]
        # qwen.cu: original_context_length defaults to context_length, extended by the factor.
        return Rope(spec, {"rope_type": "linear", "factor": factor}, TRAINED_CTX, TRAINED_CTX,
                    {"type": "linear", "factor": factor}, ctx_max=round(factor * TRAINED_CTX))
    if kind == "yarn" and len(vals) in (1, 2) and vals[0] >= 1 and min(vals) >= 1:
        factor, orig = vals[0], int(vals[1]) if len(vals) == 2 else TRAINED_CTX
        # As the tests' Qwen2.5-with-YaRN GGUF: context_length is the original one. Some transformers
        # releases derive the factor as max_position_embeddings / original, so the two must agree.
        return Rope(spec, {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": orig},
                    round(factor * orig), orig,
                    {"type": "yarn", "factor": factor, "original_context_length": orig},
                    ctx_max=round(factor * orig))
    if kind == "llama3" and (not vals or (len(vals) == 4 and vals[0] >= 1 and 0 < vals[1] < vals[2]
                                          and vals[3] >= 1)):
        factor, low, high, orig = vals or (8.0, 1.0, 4.0, 8192)  # Llama 3.1's published values
        orig = int(orig)
        # As Llama 3.1: no scaling keys, a long context_length and rope_freqs.weight.
        ctx = round(factor * orig)
        return Rope(spec, {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                           "high_freq_factor": high, "original_max_position_embeddings": orig},
                    ctx, ctx, llama3=dict(factor=factor, low_freq_factor=low, high_freq_factor=high,
                                          original_context_length=orig), ctx_max=ctx)
    raise ValueError(f"--rope-scaling {spec!r}: want none, linear:FACTOR, yarn:FACTOR[:ORIG_CTX] or "
                     "llama3[:FACTOR:LOW:HIGH:ORIG_CTX] (factors and ORIG_CTX >= 1, 0 < LOW < HIGH)")


@dataclass
class Spec:
    arch: str   # qwen2 or llama
    shape: str  # a SHAPES key
    rope: Rope

    @property
    def dims(self):
        return SHAPES[self.shape]


def hf_config(spec):
    import transformers
    cls = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}[spec.arch]
    cfg = cls(**spec.dims, rms_norm_eps=RMS_EPS, tie_word_embeddings=True,
              max_position_embeddings=spec.rope.hf_max_pos)
    if getattr(cfg, "rope_parameters", None) is not None:  # transformers 5 keeps rope_theta here
        cfg.rope_parameters = {"rope_theta": ROPE_THETA, **spec.rope.hf}
    else:
        cfg.rope_theta = ROPE_THETA
        kind = spec.rope.hf["rope_type"]
        cfg.rope_scaling = None if kind == "default" else {"type": kind, **spec.rope.hf}
    return cfg


def build_hf_model(out_dir, seed, spec):
    """Random model of the spec's shape, saved by transformers; returns its directory. q/k/v
    biases (qwen2) and norm weights are random too, so every parameter matters."""
    import torch
    import transformers

    cls = {"qwen2": transformers.Qwen2ForCausalLM, "llama": transformers.LlamaForCausalLM}[spec.arch]
    torch.manual_seed(seed)
    model = cls(hf_config(spec)).float()
    with torch.no_grad():
        for layer in model.model.layers:
            if spec.arch == "qwen2":
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.02)
            layer.input_layernorm.weight.normal_(1.0, 0.1)
            layer.post_attention_layernorm.weight.normal_(1.0, 0.1)
        model.model.norm.weight.normal_(1.0, 0.1)
    model.save_pretrained(out_dir)
    return out_dir


def gguf_name(hf_name):
    """HF parameter name -> GGUF tensor name (llama.cpp's names), None for the tied lm_head."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return None
    parts = hf_name.split(".")  # model.layers.N.<module>.<proj>.<weight|bias>
    assert parts[0] == "model" and parts[1] == "layers", hf_name
    layer, rest = parts[2], ".".join(parts[3:])
    table = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    return f"blk.{layer}.{table[rest]}"


def _heads_of(gguf_tensor, dims):
    """Heads of a llama q/k weight (whose rows llama.cpp's converter reorders), else None."""
    if gguf_tensor.endswith("attn_q.weight"):
        return dims["num_attention_heads"]
    if gguf_tensor.endswith("attn_k.weight"):
        return dims["num_key_value_heads"]
    return None


def to_gguf_rows(w, n_head):
    """HF q/k rows (per head: the first halves of the rotary pairs, then the second halves) ->
    llama.cpp's llama order (the two members of a pair adjacent), as its converter writes them."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, -1).swapaxes(1, 2).reshape(w.shape)


def from_gguf_rows(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


def write_gguf(tensors, path, type_name, bin_dir, spec):
    """tensors: {hf name: float32 ndarray}. 2-D weights in `type_name`, the rest F32."""
    import gguf
    if type_name == "Q4_K_M":
        f16 = path.with_name(path.stem + "-f16.gguf")
        write_gguf(tensors, f16, "F16", bin_dir, spec)
        subprocess.run([str(bin_dir / "qwen-quantize"), str(f16), str(path), "Q4_K_M"], check=True,
                       stdout=subprocess.DEVNULL)
        f16.unlink()
        return
    d = spec.dims
    qt = gguf.GGMLQuantizationType[type_name]
    w = gguf.GGUFWriter(str(path), arch=spec.arch)
    w.add_name(f"hf-random-{spec.arch}-{spec.shape}-{type_name}")
    w.add_context_length(spec.rope.gguf_ctx)
    w.add_embedding_length(d["hidden_size"])
    w.add_block_count(d["num_hidden_layers"])
    w.add_feed_forward_length(d["intermediate_size"])
    w.add_head_count(d["num_attention_heads"])
    w.add_head_count_kv(d["num_key_value_heads"])
    w.add_key_length(d["head_dim"])
    w.add_value_length(d["head_dim"])
    w.add_rope_freq_base(ROPE_THETA)
    for key, value in spec.rope.gguf_keys.items():
        vtype = gguf.GGUFValueType.STRING if key == "type" else (
            gguf.GGUFValueType.UINT32 if key == "original_context_length" else gguf.GGUFValueType.FLOAT32)
        w.add_key_value(f"{spec.arch}.rope.scaling.{key}", value, vtype)
    w.add_layer_norm_rms_eps(RMS_EPS)
    if spec.rope.llama3:
        w.add_tensor("rope_freqs.weight", llama3_rope_freqs(d["head_dim"], ROPE_THETA, **spec.rope.llama3))
    for name, t in tensors.items():
        g = gguf_name(name)
        if g is None:
            continue
        if t.ndim == 2:
            heads = _heads_of(g, d) if spec.arch == "llama" else None
            if heads:
                t = np.ascontiguousarray(to_gguf_rows(t, heads))
            w.add_tensor(g, gguf.quants.quantize(t, qt), raw_dtype=qt)
        else:
            w.add_tensor(g, t.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_gguf_weights(path, spec):
    """{gguf name: float32 ndarray [rows][cols]} exactly as stored (dequantized), llama q/k rows
    back in HF's order."""
    import gguf
    r = gguf.GGUFReader(str(path))
    out = {}
    for t in r.tensors:
        rows_cols = [int(x) for x in reversed(t.shape.tolist())]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(rows_cols)
        heads = _heads_of(t.name, spec.dims) if spec.arch == "llama" else None
        out[t.name] = np.ascontiguousarray(from_gguf_rows(w, heads)) if heads else w
    return out


def hf_logits(model_dir, weights, tokens, spec, device, chunk):
    """fp32 logits [n][vocab] (host float32) of the HF model carrying `weights` (gguf names) and
    the peak device memory in bytes (None on the CPU). The positions go in chunks of `chunk`
    through transformers' KV cache, eager attention: a chunk's scores are heads x chunk x n fp32
    (4 x 2048 x 40,000 x 4 B = 1.3 GB on the small shape) where one pass would need n x n."""
    import torch
    import transformers

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    cls = {"qwen2": transformers.Qwen2ForCausalLM, "llama": transformers.LlamaForCausalLM}[spec.arch]
    model = cls.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = np.empty((len(tokens), spec.dims["vocab_size"]), dtype=np.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = gguf_name(name)
            assert g in weights, f"{name} ({g}) missing from the GGUF"
            p.copy_(torch.from_numpy(weights[g]).reshape(p.shape))
        model = model.to(device).eval()
        ids = torch.tensor([tokens], dtype=torch.long, device=device)
        # Recent transformers (5.25 here) call past_key_values, input and output, `cache`.
        key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        past = None
        for b in range(0, len(tokens), chunk):
            res = model(input_ids=ids[:, b:b + chunk], use_cache=True, **{key: past})
            past = getattr(res, key)
            out[b:b + chunk] = res.logits[0].float().cpu().numpy()
            del res
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    del model, past
    if device == "cuda":
        torch.cuda.empty_cache()
    return out, peak


def memory_plan(n, spec, chunk):
    """Host bytes of the reference logits (and of each qwen-logits .npy on disk) and a device
    estimate of transformers' largest chunk: its eager scores, probabilities and logits."""
    d = spec.dims
    rows = n * d["vocab_size"] * 4
    scores = 2 * d["num_attention_heads"] * min(chunk, n) * n * 4
    logits = 2 * min(chunk, n) * d["vocab_size"] * 4
    params = 4 * (d["vocab_size"] * d["hidden_size"] + d["num_hidden_layers"] * (
        d["hidden_size"] * d["head_dim"] * 2 * (d["num_attention_heads"] + d["num_key_value_heads"])
        + 3 * d["hidden_size"] * d["intermediate_size"]))
    return rows, params + scores + logits
