// Model hyperparameters read from the "<arch>.*" GGUF keys and validated at load.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace qwen::gguf {
class File;
}

namespace qwen {

enum class Arch { Qwen2, Qwen3, Llama };
enum class RopeScalingType { None, Linear, Yarn };
// How an embedder turns a sequence's final hidden states into one vector: <arch>.pooling_type as
// llama.cpp numbers it (0 none, 1 mean, 2 cls: the first token, 3 last: the last token, 4 rank).
enum class Pooling { None = 0, Mean = 1, Cls = 2, Last = 3, Rank = 4 };

// RoPE scaling from the "<arch>.rope.scaling.*" keys as llama.cpp writes them, applied as HF
// transformers' modeling_rope_utils does (ARCHITECTURE §RoPE scaling). A key this engine does not
// understand, or one that does not apply to the scaling type, is an error naming it.
struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  float factor = 1.f;       // rope.scaling.factor (>= 1): context extension; linear divides positions
  int n_ctx_orig = 0;       // rope.scaling.original_context_length (default: <arch>.context_length)
  float attn_factor = 1.f;  // rope.scaling.attn_factor: multiplies cos/sin (yarn: times 0.1 ln f + 1)
  float beta_fast = 32.f;   // rope.scaling.yarn_beta_fast: rotations where the yarn ramp starts
  float beta_slow = 1.f;    // rope.scaling.yarn_beta_slow: rotations where it ends
  float ext_factor = 1.f;   // rope.scaling.yarn_ext_factor: weight of the ramp (1: YaRN as published)
};

struct ModelConfig {
  Arch arch = Arch::Qwen2;
  std::string arch_name;           // general.architecture: "qwen2", "qwen3", "llama"
  int n_vocab = 0;                 // rows of token_embd.weight
  int n_embd = 0;                  // <arch>.embedding_length
  int n_layer = 0;                 // <arch>.block_count
  int n_ff = 0;                    // <arch>.feed_forward_length
  int n_head = 0;                  // <arch>.attention.head_count
  int n_head_kv = 0;               // <arch>.attention.head_count_kv (defaults to n_head)
  int head_dim = 0;                // <arch>.attention.key_length (qwen3: not n_embd / n_head)
  int n_ctx_train = 0;             // <arch>.context_length
  float rope_freq_base = 10000.f;  // <arch>.rope.freq_base
  RopeScaling rope_scaling;        // <arch>.rope.scaling.*
  // Positions the model is trained for: context_length, or factor x original_context_length
  // under linear/yarn scaling when that is more. The runtime's context default and limit.
  int n_ctx_max = 0;
  RopeMode rope_mode = RopeMode::Neox;  // NEOX for qwen2/qwen3, normal for llama
  float rms_eps = 1e-6f;                // <arch>.attention.layer_norm_rms_epsilon
  bool qkv_bias = false;                // qwen2: attn_{q,k,v}.bias
  bool qk_norm = false;                 // qwen3: attn_q_norm / attn_k_norm per head
  bool tied_output = false;             // no output.weight: the lm_head is token_embd.weight
  Pooling pooling = Pooling::None;      // <arch>.pooling_type (absent: none, a generative model)

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }

  // Reads and validates; errors name the file and the key with its bad value.
  static ModelConfig from_gguf(const gguf::File& f);
};

const char* arch_name(Arch a);
const char* rope_scaling_name(RopeScalingType t);  // "none", "linear", "yarn"
const char* pooling_name(Pooling p);               // "none", "mean", "cls", "last", "rank"

// The rope's inverse frequency of each pair i < head_dim/2, scaling included: base^(-2i/head_dim)
// divided by freq_factors[i] (the llama3 rope_freqs.weight tensor; empty: none), then linear or
// YaRN scaling. Computed in fp64 and rounded once to fp32, the precision of HF's inv_freq buffer.
std::vector<float> rope_inv_freq(const ModelConfig& c, std::span<const float> freq_factors);
// The factor on cos and sin: attn_factor, times YaRN's 0.1 ln(factor) + 1 (HF's default
// attention_factor; llama.cpp's rope_yarn magnitude) when yarn extrapolates (ext_factor != 0).
float rope_mscale(const ModelConfig& c);

}  // namespace qwen
