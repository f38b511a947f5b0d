#include "runtime/kv_cache.h"

#include "util/check.h"

namespace qwen {

KVCache::KVCache(Backend& backend, const ModelConfig& c, int n_seq, int n_ctx, GGMLType type)
    : backend_(backend), n_seq_(n_seq), n_ctx_(n_ctx) {
  QWEN_CHECK(type == GGMLType::F32 || type == GGMLType::F16, "KV cache type ", type_name(type),
             " is not supported (F32 or F16)");
  QWEN_CHECK(n_seq > 0 && n_ctx > 0, "KV cache of ", n_seq, " slots x ", n_ctx, " positions is empty");
  const size_t elem = type == GGMLType::F32 ? 4 : 2;
  const size_t per = size_t(n_seq) * n_ctx * c.n_head_kv * c.head_dim * elem;  // one K or V of a layer
  bytes_ = per * 2 * c.n_layer;
  data_ = backend.alloc(bytes_);
  auto* p = static_cast<uint8_t*>(data_);
  for (int l = 0; l < c.n_layer; ++l) {
    KVLayer kv;
    kv.k = p + per * (2 * l);
    kv.v = p + per * (2 * l + 1);
    kv.type = type;
    kv.n_seq = n_seq;
    kv.n_ctx = n_ctx;
    kv.n_head_kv = c.n_head_kv;
    kv.head_dim = c.head_dim;
    layers_.push_back(kv);
  }
}

KVCache::~KVCache() {
  if (data_ != nullptr) backend_.free(data_);
}

}  // namespace qwen
