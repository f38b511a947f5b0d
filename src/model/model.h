// A decoder-only transformer (qwen2, qwen3, llama) bound to a backend. The forward pass is
// written once against the Backend ops; the architectures differ only in flags of ModelConfig
// (qkv biases, per-head q/k norm, rope pairing), exactly as their HF modules do.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "backend/backend.h"
#include "model/config.h"
#include "model/weights.h"

namespace qwen::gguf {
class File;
}

namespace qwen {

// Debug hook: sees each named intermediate as the backend computed it (Backend::tap: a host
// copy, and the kernel that wrote it, fused or not). layer = -1 outside the blocks.
using ForwardTap = TapSink;

// What Model::forward writes for its output rows.
enum class ForwardOutput {
  Logits,  // the lm_head's logits [n_out][n_vocab]
  Hidden,  // the final hidden states after output_norm [n_out][n_embd] (embeddings; no lm_head)
};

class Model {
 public:
  // Binds and uploads the weights and allocates scratch for up to max_batch tokens per forward.
  Model(const gguf::File& f, Backend& backend, int max_batch,
        const std::function<void(float)>& on_progress = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return *weights_; }
  Backend& backend() const { return backend_; }
  int max_batch() const { return max_batch_; }

  // Bytes per token, in one place (ARCHITECTURE §Rules 7): qwen-cli's speed line, qwen-bench's
  // GB/s and the server's /metrics all divide these by a measured time.
  // The weights one forward streams whatever its token count: every layer's matrices, norms and
  // biases, the output norm and the lm_head (the embedding table only through its rows).
  size_t streamed_weight_bytes() const;
  // K and V of one position over every layer, in the cache type kv_type.
  size_t kv_bytes_per_position(GGMLType kv_type) const;
  // One decode step of n_seq sequences, each with `depth` positions already cached: the streamed
  // weights once, and per sequence one embedding row, the K/V of the depth + 1 positions attention
  // reads (its own included) and of the one position it writes.
  size_t decode_bytes(int64_t depth, GGMLType kv_type, int n_seq = 1) const;
  // The same step when its sequences sit at different depths (a server's streams).
  size_t decode_bytes(std::span<const int64_t> depths, GGMLType kv_type) const;

  // One forward pass over batch (ids/pos/seq in backend memory, n_tokens <= max_batch); stores
  // the batch's K/V into kv (one KVLayer per layer) and writes to `out` (backend memory), for the
  // batch rows out_rows[0..n_out) (backend memory, int32), their logits [n_out][n_vocab] or, with
  // ForwardOutput::Hidden, their normed hidden states [n_out][n_embd]. Issues backend ops only:
  // no alloc, upload, download or synchronize, so a backend may capture it as a graph. With a
  // tap it is a debug run instead, never captured: the backend copies each tapped tensor to the
  // host, and the call ends with synchronize(), so every tap has been called when it returns.
  void forward(const Batch& batch, std::span<KVLayer> kv, const int32_t* out_rows, int n_out, float* out,
               const ForwardTap& tap = {}, ForwardOutput what = ForwardOutput::Logits) const;

 private:
  ModelConfig config_;
  Backend& backend_;
  int max_batch_;
  std::unique_ptr<ModelWeights> weights_;
  // Scratch activations in backend memory, each [max_batch][width]; one allocation.
  void* scratch_ = nullptr;
  float* x_ = nullptr;     // residual stream [B][n_embd]
  float* cur_ = nullptr;   // normed input / sublayer output [B][n_embd]
  float* q_ = nullptr;     // [B][n_head][head_dim]
  float* k_ = nullptr;     // [B][n_head_kv][head_dim]
  float* v_ = nullptr;     // [B][n_head_kv][head_dim]
  float* attn_ = nullptr;  // attention output [B][n_head][head_dim]
  float* gate_ = nullptr;  // [B][n_ff]
  float* up_ = nullptr;    // [B][n_ff]
  float* out_ = nullptr;   // rows gathered for the lm_head [B][n_embd]
};

}  // namespace qwen
