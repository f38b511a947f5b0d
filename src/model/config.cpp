#include "model/config.h"

#include "gguf/gguf.h"
#include "util/check.h"

namespace qwen {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Qwen2:
      return "qwen2";
    case Arch::Qwen3:
      return "qwen3";
    case Arch::Llama:
      return "llama";
  }
  return "?";
}

namespace {

int positive_int(const gguf::File& f, const std::string& key, int64_t v) {
  QWEN_CHECK(v > 0 && v <= (int64_t(1) << 30), f.path(), ": ", key, " = ", v, " is out of range");
  return int(v);
}

int required_int(const gguf::File& f, const std::string& key) {
  QWEN_CHECK(f.has(key), f.path(), ": missing required key ", key);
  return positive_int(f, key, f.get<int64_t>(key));
}

}  // namespace

ModelConfig ModelConfig::from_gguf(const gguf::File& f) {
  ModelConfig c;
  QWEN_CHECK(f.has("general.architecture"), f.path(), ": missing key general.architecture");
  c.arch_name = f.get<std::string>("general.architecture");
  if (c.arch_name == "qwen2") {
    c.arch = Arch::Qwen2;
  } else if (c.arch_name == "qwen3") {
    c.arch = Arch::Qwen3;
  } else if (c.arch_name == "llama") {
    c.arch = Arch::Llama;
  } else {
    QWEN_FAIL(f.path(), ": general.architecture = '", c.arch_name,
              "' is not supported (expected qwen2, qwen3 or llama)");
  }
  const std::string a = c.arch_name + ".";
  c.n_embd = required_int(f, a + "embedding_length");
  c.n_layer = required_int(f, a + "block_count");
  c.n_ff = required_int(f, a + "feed_forward_length");
  c.n_head = required_int(f, a + "attention.head_count");
  c.n_head_kv =
      f.has(a + "attention.head_count_kv") ? required_int(f, a + "attention.head_count_kv") : c.n_head;
  c.n_ctx_train = required_int(f, a + "context_length");
  if (f.has(a + "attention.key_length")) {
    c.head_dim = required_int(f, a + "attention.key_length");
  } else {
    QWEN_CHECK(c.n_embd % c.n_head == 0, f.path(), ": ", a, "embedding_length = ", c.n_embd,
               " is not a multiple of ", a, "attention.head_count = ", c.n_head, " and ", a,
               "attention.key_length is missing");
    c.head_dim = c.n_embd / c.n_head;
  }
  if (f.has(a + "attention.value_length")) {
    const int v = required_int(f, a + "attention.value_length");
    QWEN_CHECK(v == c.head_dim, f.path(), ": ", a, "attention.value_length = ", v, " differs from ", a,
               "attention.key_length = ", c.head_dim, " (unsupported)");
  }
  QWEN_CHECK(c.head_dim % 2 == 0, f.path(), ": head dim ", c.head_dim, " is odd (rope needs pairs)");
  QWEN_CHECK(c.n_head % c.n_head_kv == 0, f.path(), ": ", a, "attention.head_count = ", c.n_head,
             " is not a multiple of ", a, "attention.head_count_kv = ", c.n_head_kv);
  c.rope_freq_base = f.get_or<float>(a + "rope.freq_base", 10000.f);
  QWEN_CHECK(c.rope_freq_base > 1.f, f.path(), ": ", a, "rope.freq_base = ", c.rope_freq_base,
             " must be > 1");
  const std::string scaling = f.get_or<std::string>(a + "rope.scaling.type", "none");
  const float factor = f.get_or<float>(a + "rope.scaling.factor", 1.f);
  QWEN_CHECK(scaling == "none" || (scaling == "linear" && factor == 1.f), f.path(), ": ", a,
             "rope.scaling.type = '", scaling, "' with factor ", factor,
             " is not supported (only unscaled rope)");
  c.rms_eps = f.get_or<float>(a + "attention.layer_norm_rms_epsilon", 1e-6f);
  QWEN_CHECK(c.rms_eps > 0.f && c.rms_eps < 1.f, f.path(), ": ", a,
             "attention.layer_norm_rms_epsilon = ", c.rms_eps, " is out of range (0, 1)");
  c.rope_mode = c.arch == Arch::Llama ? RopeMode::Normal : RopeMode::Neox;
  c.qkv_bias = c.arch == Arch::Qwen2;
  c.qk_norm = c.arch == Arch::Qwen3;

  const gguf::TensorInfo& embd = f.tensor("token_embd.weight");
  QWEN_CHECK(embd.n_dims == 2 && embd.ne[0] == c.n_embd, f.path(), ": token_embd.weight has shape ",
             embd.shape_str(), ", expected ", c.n_embd, "xN_VOCAB");
  c.n_vocab = positive_int(f, "token_embd.weight ne1", embd.ne[1]);
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  return c;
}

}  // namespace qwen
