"""Independent numpy forward pass of qwen2 / qwen3 / llama GGUF models (the test oracle).

Written from the HF transformers modules (Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM),
not from our C++: weights are read with gguf.GGUFReader and dequantized with gguf.quants, and
the whole sequence is computed at once with a causal mask (no KV cache), in float64.

GGUF vs HF layout: a GGUF matrix of shape ne = (in, out) reads as a numpy array [out][in], i.e.
exactly an nn.Linear weight. For llama, llama.cpp's converter permutes the rows of q_proj/k_proj
so that rope can rotate adjacent pairs; we undo that permutation and apply HF's rotate_half rope,
which makes the check of our "normal" rope independent of how we implemented it.

RoPE scaling is read from the GGUF keys and mapped to HF's rope_scaling, then computed as HF's
modeling_rope_utils does (linear, yarn, and llama3 whose rope_freqs.weight divisors are applied to
the frequencies): GGUF rope.scaling.factor / original_context_length / yarn_beta_fast / yarn_beta_slow
are HF's factor / original_max_position_embeddings / beta_fast / beta_slow, and llama.cpp scales
cos/sin by rope.scaling.attn_factor on top of yarn's default attention_factor 0.1 ln(factor) + 1.
The frequency table is rounded to float32 once, as HF keeps its inv_freq buffer in float32.

Usage: logits = Reference("model.gguf").forward([1, 2, 3])   # [n_tokens][n_vocab]
Large models: Reference(path, dtype=np.float32) halves the memory (weights and math in float32).
"""
import numpy as np

import gguf


class Reference:
    # The KV cache's storage type (a gguf.GGMLQuantizationType, as qwen's --kv-type), or None for
    # exact K/V: K after rope and V then pass through gguf.quants.quantize / dequantize per head, in
    # GGUF element order (qwen2 / qwen3: llama's heads are permuted to HF's order here).
    kv_type = None

    def __init__(self, path, dtype=np.float64):
        self.dtype = dtype
        self.reader = gguf.GGUFReader(str(path))
        self.arch = self._str("general.architecture")
        a = self.arch
        self.n_layer = self._int(f"{a}.block_count")
        self.n_head = self._int(f"{a}.attention.head_count")
        self.n_head_kv = self._int(f"{a}.attention.head_count_kv", self.n_head)
        self.n_embd = self._int(f"{a}.embedding_length")
        self.head_dim = self._int(f"{a}.attention.key_length", self.n_embd // self.n_head)
        self.theta = self._float(f"{a}.rope.freq_base", 10000.0)
        self.n_ctx_train = self._int(f"{a}.context_length")
        self.eps = self._float(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self._cache = {}
        self.inv_freq, self.attention_factor = self._rope_parameters()

    # ---- metadata ----
    def _field(self, key):
        return self.reader.fields.get(key)

    def _str(self, key):
        f = self._field(key)
        return bytes(f.parts[f.data[0]]).decode()

    def _int(self, key, default=None):
        f = self._field(key)
        return default if f is None else int(f.parts[f.data[0]][0])

    def _float(self, key, default):
        f = self._field(key)
        return default if f is None else float(f.parts[f.data[0]][0])

    # ---- weights ----
    def has(self, name):
        return name in self.tensors

    def w(self, name):
        """Dequantized tensor as self.dtype, numpy shape = reversed GGUF ne ([out][in] for matrices)."""
        if name not in self._cache:
            t = self.tensors[name]
            data = gguf.quants.dequantize(t.data, t.tensor_type)
            shape = tuple(int(x) for x in reversed(t.shape))
            self._cache[name] = np.asarray(data, dtype=self.dtype).reshape(shape)
        return self._cache[name]

    def _hf_qk(self, name, n_head):
        """q_proj / k_proj weight in HF row order (undoes llama.cpp's llama permutation)."""
        w = self.w(name)
        if self.arch != "llama":
            return w
        out, inp = w.shape
        return w.reshape(n_head, self.head_dim // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)

    def _hf_qk_bias(self, name, n_head):
        b = self.w(name)
        if self.arch != "llama":
            return b
        return b.reshape(n_head, self.head_dim // 2, 2).swapaxes(1, 2).reshape(-1)

    # ---- modules ----
    def rms_norm(self, x, weight):
        """HF *RMSNorm: x * rsqrt(mean(x^2) + eps) * weight over the last axis."""
        var = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(var + self.eps) * weight

    def _rope_parameters(self):
        """(inv_freq [D/2] float32 values as float64, attention_factor) as HF computes them."""
        a, d = self.arch, self.head_dim
        s = f"{a}.rope.scaling."
        kind = self._str(s + "type") if self._field(s + "type") else "none"
        factor = self._float(s + "factor", 1.0)
        inv_freq = 1.0 / (self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        if self.has("rope_freqs.weight"):  # llama3: HF's piecewise scaling, stored as divisors
            inv_freq = inv_freq / self.w("rope_freqs.weight").astype(np.float64)
        attention_factor = self._float(s + "attn_factor", 1.0)
        if kind == "linear":
            inv_freq = inv_freq / factor
        elif kind == "yarn":
            assert self._float(s + "yarn_ext_factor", 1.0) == 1.0, "the reference implements YaRN as published"
            orig = self._int(s + "original_context_length", self.n_ctx_train)
            beta_fast = self._float(s + "yarn_beta_fast", 32.0)
            beta_slow = self._float(s + "yarn_beta_slow", 1.0)

            def correction_dim(rotations):  # the dim whose pair turns `rotations` times over orig
                return d * np.log(orig / (rotations * 2 * np.pi)) / (2 * np.log(self.theta))

            low = max(np.floor(correction_dim(beta_fast)), 0)
            high = min(np.ceil(correction_dim(beta_slow)), d - 1)
            ramp = np.clip((np.arange(d // 2) - low) / ((high - low) or 0.001), 0, 1)
            extrapolation = 1 - ramp  # share of the unscaled frequency
            inv_freq = inv_freq / factor * (1 - extrapolation) + inv_freq * extrapolation
            if factor > 1:
                attention_factor *= 0.1 * np.log(factor) + 1
        else:
            assert kind == "none" or factor == 1.0, f"rope scaling {kind!r} is not in the reference"
        return inv_freq.astype(np.float32).astype(np.float64), attention_factor

    def rope(self, x, positions):
        """HF apply_rotary_pos_emb with rotate_half; x [T][H][D]; cos/sin scaled by attention_factor."""
        d = self.head_dim
        freqs = np.outer(positions, self.inv_freq)
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos = (np.cos(emb) * self.attention_factor)[:, None, :].astype(self.dtype)
        sin = (np.sin(emb) * self.attention_factor)[:, None, :].astype(self.dtype)
        rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)
        return x * cos + rotated * sin

    def attention(self, layer, x, positions, taps):
        p = f"blk.{layer}."
        T, H, Hkv, D = x.shape[0], self.n_head, self.n_head_kv, self.head_dim
        q = x @ self._hf_qk(p + "attn_q.weight", H).T
        k = x @ self._hf_qk(p + "attn_k.weight", Hkv).T
        v = x @ self.w(p + "attn_v.weight").T
        if self.has(p + "attn_q.bias"):
            q = q + self._hf_qk_bias(p + "attn_q.bias", H)
            k = k + self._hf_qk_bias(p + "attn_k.bias", Hkv)
            v = v + self.w(p + "attn_v.bias")
        q, k, v = q.reshape(T, H, D), k.reshape(T, Hkv, D), v.reshape(T, Hkv, D)
        if self.arch == "qwen3":  # q_norm / k_norm over head_dim, before rope
            q = self.rms_norm(q, self.w(p + "attn_q_norm.weight"))
            k = self.rms_norm(k, self.w(p + "attn_k_norm.weight"))
        q, k = self.rope(q, positions), self.rope(k, positions)
        if self.kv_type is not None:
            k, v = self._kv_store(k), self._kv_store(v)
        group = H // Hkv  # repeat_kv
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / self.dtype(np.sqrt(D))
        mask = np.triu(np.ones((T, T), dtype=bool), k=1)
        scores = np.where(mask[None], -np.inf, scores)
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.einsum("hts,shd->thd", probs, v).reshape(T, H * D)
        taps[f"L{layer:02d}.kqv_out"] = out
        return out @ self.w(p + "attn_output.weight").T

    def _kv_store(self, x):
        assert self.arch != "llama", "kv_type: llama's heads are in HF's permuted order here"
        rows = x.reshape(-1, x.shape[-1]).astype(np.float32)
        stored = gguf.quants.dequantize(gguf.quants.quantize(rows, self.kv_type), self.kv_type)
        return stored.reshape(x.shape).astype(self.dtype)

    def mlp(self, layer, x):
        p = f"blk.{layer}."
        gate = x @ self.w(p + "ffn_gate.weight").T
        up = x @ self.w(p + "ffn_up.weight").T
        return (gate / (1.0 + np.exp(-gate)) * up) @ self.w(p + "ffn_down.weight").T

    def forward(self, tokens, taps=None):
        """Logits [len(tokens)][n_vocab] (self.dtype). `taps` (a dict) receives named intermediates."""
        taps = {} if taps is None else taps
        tokens = np.asarray(tokens, dtype=np.int64)
        positions = np.arange(len(tokens), dtype=np.float64)
        h = self.w("token_embd.weight")[tokens]
        taps["inp_embd"] = h
        for layer in range(self.n_layer):
            p = f"blk.{layer}."
            x = self.rms_norm(h, self.w(p + "attn_norm.weight"))
            taps[f"L{layer:02d}.attn_norm"] = x
            h = h + self.attention(layer, x, positions, taps)
            taps[f"L{layer:02d}.ffn_inp"] = h
            h = h + self.mlp(layer, self.rms_norm(h, self.w(p + "ffn_norm.weight")))
            taps[f"L{layer:02d}.l_out"] = h
        h = self.rms_norm(h, self.w("output_norm.weight"))
        head = self.w("output.weight") if self.has("output.weight") else self.w("token_embd.weight")
        return h @ head.T
