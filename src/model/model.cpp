#include "model/model.h"

#include <cmath>

#include "gguf/gguf.h"
#include "util/check.h"

namespace qwen {

Model::Model(const gguf::File& f, Backend& backend, int max_batch,
             const std::function<void(float)>& on_progress)
    : config_(ModelConfig::from_gguf(f)), backend_(backend), max_batch_(max_batch) {
  QWEN_CHECK(max_batch > 0, "max batch ", max_batch, " must be positive");
  weights_ = std::make_unique<ModelWeights>(f, config_, backend, on_progress);
  const ModelConfig& c = config_;
  const size_t B = size_t(max_batch);
  const size_t widths[] = {size_t(c.n_embd),   size_t(c.n_embd),   size_t(c.q_dim()),
                           size_t(c.kv_dim()), size_t(c.kv_dim()), size_t(c.q_dim()),
                           size_t(c.n_ff),     size_t(c.n_ff),     size_t(c.n_embd)};
  float** bufs[] = {&x_, &cur_, &q_, &k_, &v_, &attn_, &gate_, &up_, &out_};
  size_t total = 0;
  for (size_t w : widths) total += B * w;
  scratch_ = backend.alloc(total * sizeof(float));
  float* p = static_cast<float*>(scratch_);
  for (size_t i = 0; i < std::size(widths); ++i) {
    *bufs[i] = p;
    p += B * widths[i];
  }
}

Model::~Model() {
  if (scratch_ != nullptr) backend_.free(scratch_);
}

size_t Model::streamed_weight_bytes() const {
  const ModelConfig& c = config_;
  const ModelWeights& w = *weights_;
  const size_t f32 = sizeof(float);
  size_t b = w.output.nbytes() + size_t(c.n_embd) * f32;  // lm_head, output_norm
  for (const LayerWeights& L : w.layers) {
    for (const Weight* m :
         {&L.attn_q, &L.attn_k, &L.attn_v, &L.attn_output, &L.ffn_gate, &L.ffn_up, &L.ffn_down})
      b += m->nbytes();
    b += 2 * size_t(c.n_embd) * f32;  // attn_norm, ffn_norm
    if (L.attn_q_b != nullptr) b += size_t(c.q_dim()) * f32;
    if (L.attn_k_b != nullptr) b += size_t(c.kv_dim()) * f32;
    if (L.attn_v_b != nullptr) b += size_t(c.kv_dim()) * f32;
    if (L.attn_q_norm != nullptr) b += size_t(c.head_dim) * f32;
    if (L.attn_k_norm != nullptr) b += size_t(c.head_dim) * f32;
  }
  return b;
}

size_t Model::kv_bytes_per_position(GGMLType kv_type) const {
  return 2 * size_t(config_.n_layer) * row_bytes(kv_type, config_.kv_dim());
}

size_t Model::decode_bytes(int64_t depth, GGMLType kv_type, int n_seq) const {
  QWEN_CHECK(depth >= 0 && n_seq >= 1, "decode_bytes: depth ", depth, ", n_seq ", n_seq);
  const size_t per_seq =
      weights_->token_embd.row_bytes() + size_t(depth + 2) * kv_bytes_per_position(kv_type);
  return streamed_weight_bytes() + size_t(n_seq) * per_seq;
}

size_t Model::decode_bytes(std::span<const int64_t> depths, GGMLType kv_type) const {
  QWEN_CHECK(!depths.empty(), "decode_bytes: a step of no sequence");
  const size_t weights = streamed_weight_bytes();
  size_t b = weights;
  for (int64_t d : depths) b += decode_bytes(d, kv_type) - weights;
  return b;
}

// Follows HF Qwen2DecoderLayer / Qwen3DecoderLayer / LlamaDecoderLayer: pre-norm attention and
// SwiGLU MLP with residuals, final RMSNorm, lm_head. Names follow llama.cpp's graph names.
void Model::forward(const Batch& batch, std::span<KVLayer> kv, const int32_t* out_rows, int n_out, float* out,
                    const ForwardTap& tap, ForwardOutput what) const {
  const ModelConfig& c = config_;
  const ModelWeights& w = *weights_;
  Backend& be = backend_;
  const int n = batch.n_tokens;
  QWEN_CHECK(n > 0 && n <= max_batch_, "forward: batch of ", n, " tokens, max batch is ", max_batch_);
  QWEN_CHECK(n_out > 0 && n_out <= n, "forward: ", n_out, " logit rows requested of ", n, " tokens");
  QWEN_CHECK(kv.size() == size_t(c.n_layer), "forward: ", kv.size(), " KV layers for ", c.n_layer,
             " model layers");
  auto name = [&](const char* what, int layer, const float* data, int64_t rows, int64_t cols) {
    if (tap) be.tap(what, layer, data, rows, cols, tap);
  };
  const AttentionParams ap{c.n_head, c.n_head_kv, c.head_dim, 1.f / std::sqrt(float(c.head_dim))};

  be.embed(x_, w.token_embd, batch.ids, n);
  name("inp_embd", -1, x_, n, c.n_embd);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = w.layers[l];
    // --- self attention ---
    be.rmsnorm(cur_, x_, L.attn_norm, n, c.n_embd, c.rms_eps);
    name("attn_norm", l, cur_, n, c.n_embd);
    be.matmul(q_, L.attn_q, cur_, n, L.attn_q_b);
    name("Qcur", l, q_, n, c.q_dim());
    be.matmul(k_, L.attn_k, cur_, n, L.attn_k_b);
    name("Kcur", l, k_, n, c.kv_dim());
    be.matmul(v_, L.attn_v, cur_, n, L.attn_v_b);
    name("Vcur", l, v_, n, c.kv_dim());
    if (c.qk_norm) {  // qwen3: RMSNorm over each head's vector before rope
      be.rmsnorm(q_, q_, L.attn_q_norm, int64_t(n) * c.n_head, c.head_dim, c.rms_eps);
      name("Qcur_normed", l, q_, n, c.q_dim());
      be.rmsnorm(k_, k_, L.attn_k_norm, int64_t(n) * c.n_head_kv, c.head_dim, c.rms_eps);
      name("Kcur_normed", l, k_, n, c.kv_dim());
    }
    be.rope(q_, batch.pos, n, c.n_head, c.head_dim, w.rope);
    name("Qcur_rope", l, q_, n, c.q_dim());
    be.rope(k_, batch.pos, n, c.n_head_kv, c.head_dim, w.rope);
    name("Kcur_rope", l, k_, n, c.kv_dim());
    be.kv_store(kv[l], k_, v_, batch);
    be.attention(attn_, q_, kv[l], batch, ap);
    name("kqv_out", l, attn_, n, c.q_dim());
    be.matmul(cur_, L.attn_output, attn_, n, nullptr);
    name("attn_out", l, cur_, n, c.n_embd);
    be.add(x_, x_, cur_, int64_t(n) * c.n_embd);
    name("ffn_inp", l, x_, n, c.n_embd);
    // --- MLP: down(silu(gate(x)) * up(x)) ---
    be.rmsnorm(cur_, x_, L.ffn_norm, n, c.n_embd, c.rms_eps);
    name("ffn_norm", l, cur_, n, c.n_embd);
    be.matmul(gate_, L.ffn_gate, cur_, n, nullptr);
    name("ffn_gate", l, gate_, n, c.n_ff);
    be.matmul(up_, L.ffn_up, cur_, n, nullptr);
    name("ffn_up", l, up_, n, c.n_ff);
    be.swiglu(gate_, gate_, up_, int64_t(n) * c.n_ff);
    name("ffn_swiglu", l, gate_, n, c.n_ff);
    be.matmul(cur_, L.ffn_down, gate_, n, nullptr);
    name("ffn_out", l, cur_, n, c.n_embd);
    be.add(x_, x_, cur_, int64_t(n) * c.n_embd);
    name("l_out", l, x_, n, c.n_embd);
  }
  // Only the requested rows go through the final norm and lm_head: gathering rows of the fp32
  // residual stream is an embedding lookup in a [n][n_embd] F32 table.
  const Weight hidden{GGMLType::F32, c.n_embd, n, x_};
  be.embed(out_, hidden, out_rows, n_out);
  if (what == ForwardOutput::Hidden) {  // an embedder's output: the normed states themselves
    be.rmsnorm(out, out_, w.output_norm, n_out, c.n_embd, c.rms_eps);
    name("result_norm", -1, out, n_out, c.n_embd);
  } else {
    be.rmsnorm(out_, out_, w.output_norm, n_out, c.n_embd, c.rms_eps);
    name("result_norm", -1, out_, n_out, c.n_embd);
    be.matmul(out, w.output, out_, n_out, nullptr);
    name("result_output", -1, out, n_out, c.n_vocab);
  }
  if (tap) be.synchronize();  // a tap the backend still holds (the lm_head's) is called now
}

}  // namespace qwen
