// Binds every tensor of a GGUF model by name, type and shape and uploads it to the backend.
// Matrices stay in their GGUF type; norm weights and biases are converted to fp32. On the CPU
// backend matrices are not copied: they point into the file's mapping, so the gguf::File must
// outlive the weights.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"

namespace qwen::gguf {
class File;
}

namespace qwen {

struct LayerWeights {
  const float* attn_norm = nullptr;    // fp32 [n_embd]
  Weight attn_q;                       // [q_dim][n_embd]
  Weight attn_k;                       // [kv_dim][n_embd]
  Weight attn_v;                       // [kv_dim][n_embd]
  const float* attn_q_b = nullptr;     // fp32 [q_dim]   (qwen2; optional for llama)
  const float* attn_k_b = nullptr;     // fp32 [kv_dim]
  const float* attn_v_b = nullptr;     // fp32 [kv_dim]
  const float* attn_q_norm = nullptr;  // fp32 [head_dim] (qwen3)
  const float* attn_k_norm = nullptr;  // fp32 [head_dim] (qwen3)
  Weight attn_output;                  // [n_embd][q_dim]
  const float* ffn_norm = nullptr;     // fp32 [n_embd]
  Weight ffn_gate;                     // [n_ff][n_embd]
  Weight ffn_up;                       // [n_ff][n_embd]
  Weight ffn_down;                     // [n_embd][n_ff]
};

class ModelWeights {
 public:
  // Throws qwen::Error naming the file and tensor when one is missing, mis-shaped or of a type
  // this build cannot compute with. on_progress gets the fraction of bytes uploaded.
  ModelWeights(const gguf::File& f, const ModelConfig& c, Backend& backend,
               const std::function<void(float)>& on_progress = {});
  ~ModelWeights();
  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;

  Weight token_embd;                   // [n_vocab][n_embd]
  const float* output_norm = nullptr;  // fp32 [n_embd]
  Weight output;                       // [n_vocab][n_embd]; == token_embd when tied
  std::vector<LayerWeights> layers;
  // The rope of every layer: the inverse-frequency table (rope_inv_freq of the config and the
  // optional llama3 rope_freqs.weight divisors, in the arena) with the config's mscale and mode.
  RopeParams rope;
  // Bytes of every weight as the backend reads them (the arena plus matrices used in place).
  size_t nbytes() const { return weight_bytes_; }

 private:
  Backend& backend_;
  void* arena_ = nullptr;  // one allocation holding every tensor, each 256-byte aligned
  size_t arena_bytes_ = 0;
  size_t weight_bytes_ = 0;
};

}  // namespace qwen
