// Model hyperparameters read from the "<arch>.*" GGUF keys and validated at load.
#pragma once

#include <string>

#include "backend/backend.h"

namespace qwen::gguf {
class File;
}

namespace qwen {

enum class Arch { Qwen2, Qwen3, Llama };

struct ModelConfig {
  Arch arch = Arch::Qwen2;
  std::string arch_name;                // general.architecture: "qwen2", "qwen3", "llama"
  int n_vocab = 0;                      // rows of token_embd.weight
  int n_embd = 0;                       // <arch>.embedding_length
  int n_layer = 0;                      // <arch>.block_count
  int n_ff = 0;                         // <arch>.feed_forward_length
  int n_head = 0;                       // <arch>.attention.head_count
  int n_head_kv = 0;                    // <arch>.attention.head_count_kv (defaults to n_head)
  int head_dim = 0;                     // <arch>.attention.key_length (qwen3: not n_embd / n_head)
  int n_ctx_train = 0;                  // <arch>.context_length
  float rope_freq_base = 10000.f;       // <arch>.rope.freq_base
  RopeMode rope_mode = RopeMode::Neox;  // NEOX for qwen2/qwen3, normal for llama
  float rms_eps = 1e-6f;                // <arch>.attention.layer_norm_rms_epsilon
  bool qkv_bias = false;                // qwen2: attn_{q,k,v}.bias
  bool qk_norm = false;                 // qwen3: attn_q_norm / attn_k_norm per head
  bool tied_output = false;             // no output.weight: the lm_head is token_embd.weight

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }

  // Reads and validates; errors name the file and the key with its bad value. Rope scaling other
  // than none (or linear with factor 1) is rejected: the backend rope has no frequency scale.
  static ModelConfig from_gguf(const gguf::File& f);
};

const char* arch_name(Arch a);

}  // namespace qwen
