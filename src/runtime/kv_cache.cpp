#include "runtime/kv_cache.h"

#include <algorithm>
#include <cctype>

#include "util/check.h"

namespace qwen {

bool is_kv_type(GGMLType t) {
  return t == GGMLType::F32 || t == GGMLType::F16 || t == GGMLType::BF16 || t == GGMLType::Q8_0;
}

void check_kv_type(GGMLType t, const ModelConfig& c) {
  QWEN_CHECK(is_kv_type(t), "KV cache type ", type_name(t), " is not supported (F32, F16, BF16 or Q8_0)");
  const int64_t block = type_traits(t).block_size;
  QWEN_CHECK(c.head_dim % block == 0, "KV cache type ", type_name(t), " stores blocks of ", block,
             " along a head, but head_dim is ", c.head_dim);
}

namespace {

GGMLType parse_kv_name(const std::string& flag, const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  for (GGMLType t : {GGMLType::F32, GGMLType::F16, GGMLType::BF16, GGMLType::Q8_0}) {
    std::string n = type_name(t);
    std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (n == lower) return t;
  }
  QWEN_FAIL(flag, " ", name, ": the KV cache holds f32, f16, bf16 or q8_0");
}

}  // namespace

std::optional<GGMLType> kv_type_from_flags(const std::string& kv_type, const std::string& ctk,
                                           const std::string& ctv) {
  const bool has_kv = !kv_type.empty() && kv_type != "auto";
  std::optional<GGMLType> k, v, t;
  if (!ctk.empty()) k = parse_kv_name("-ctk", ctk);
  if (!ctv.empty()) v = parse_kv_name("-ctv", ctv);
  if (has_kv) t = parse_kv_name("--kv-type", kv_type);
  QWEN_CHECK(!k || !v || *k == *v, "-ctk ", ctk, " and -ctv ", ctv,
             " differ: K and V share one cache type here (give both the same type)");
  const std::optional<GGMLType> kv = k ? k : v;
  QWEN_CHECK(!kv || !t || *kv == *t, "--kv-type ", kv_type, " and ", k ? "-ctk " : "-ctv ", k ? ctk : ctv,
             " disagree");
  return kv ? kv : t;
}

std::vector<std::string> kv_flag_spellings(std::vector<std::string> args) {
  for (std::string& a : args) {
    if (a == "-ctk") a = "--cache-type-k";
    if (a == "-ctv") a = "--cache-type-v";
  }
  return args;
}

KVCache::KVCache(Backend& backend, const ModelConfig& c, int n_seq, int n_ctx, GGMLType type)
    : backend_(backend), n_seq_(n_seq), n_ctx_(n_ctx), type_(type) {
  check_kv_type(type, c);
  QWEN_CHECK(n_seq > 0 && n_ctx > 0, "KV cache of ", n_seq, " slots x ", n_ctx, " positions is empty");
  // One K or V of a layer: n_seq * n_ctx rows of n_head_kv * head_dim elements in `type`.
  const size_t per = size_t(n_seq) * n_ctx * row_bytes(type, int64_t(c.n_head_kv) * c.head_dim);
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
