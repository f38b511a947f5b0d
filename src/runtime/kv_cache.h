// KV cache storage: per layer, K and V of n_seq slots × n_ctx positions, allocated once.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"

namespace qwen {

// The cache types every backend reads and writes: F32, F16, BF16 and Q8_0 (blocks of 32 along
// head_dim, ggml's block layout, quantized as gguf's quantize_row does).
bool is_kv_type(GGMLType t);

// Throws naming the type when it is not one of those, or when the model's head_dim is not a whole
// number of the type's blocks (Q8_0: 32). Engine::load calls it before the weights load.
void check_kv_type(GGMLType t, const ModelConfig& c);

// The KV type of a command line: --kv-type NAME and llama.cpp's -ctk / -ctv NAME (f32, f16, bf16,
// q8_0; "auto" or empty: unset, i.e. the backend's default). K and V share one type here, so -ctk
// and -ctv must be equal, and equal to --kv-type when that is given too; otherwise the error
// names the flags and their values.
std::optional<GGMLType> kv_type_from_flags(const std::string& kv_type, const std::string& ctk,
                                           const std::string& ctv);
// llama.cpp spells -ctk / -ctv with one dash, which CLI11 reads as bundled short flags: rewrites
// them to --cache-type-k / --cache-type-v (the apps declare those) before parsing.
std::vector<std::string> kv_flag_spellings(std::vector<std::string> args);

class KVCache {
 public:
  // type: see is_kv_type. Throws naming the type (or the head size Q8_0 cannot split into
  // blocks) and the size when the backend cannot hold it.
  KVCache(Backend& backend, const ModelConfig& c, int n_seq, int n_ctx, GGMLType type);
  ~KVCache();
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;

  std::vector<KVLayer>& layers() { return layers_; }
  int n_seq() const { return n_seq_; }
  int n_ctx() const { return n_ctx_; }
  GGMLType type() const { return type_; }
  size_t nbytes() const { return bytes_; }

 private:
  Backend& backend_;
  int n_seq_, n_ctx_;
  GGMLType type_;
  size_t bytes_ = 0;
  void* data_ = nullptr;  // one allocation: layer l's K then V, each [n_seq][n_ctx][n_head_kv][head_dim]
  std::vector<KVLayer> layers_;
};

}  // namespace qwen
