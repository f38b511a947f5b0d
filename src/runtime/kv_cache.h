// KV cache storage: per layer, K and V of n_seq slots × n_ctx positions, allocated once.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "model/config.h"

namespace qwen {

class KVCache {
 public:
  // type: F32 or F16. Throws naming the size when the backend cannot hold it.
  KVCache(Backend& backend, const ModelConfig& c, int n_seq, int n_ctx, GGMLType type);
  ~KVCache();
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;

  std::vector<KVLayer>& layers() { return layers_; }
  int n_seq() const { return n_seq_; }
  int n_ctx() const { return n_ctx_; }
  size_t nbytes() const { return bytes_; }

 private:
  Backend& backend_;
  int n_seq_, n_ctx_;
  size_t bytes_ = 0;
  void* data_ = nullptr;  // one allocation: layer l's K then V, each [n_seq][n_ctx][n_head_kv][head_dim]
  std::vector<KVLayer> layers_;
};

}  // namespace qwen
