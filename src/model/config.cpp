#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <numbers>

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

const char* rope_scaling_name(RopeScalingType t) {
  switch (t) {
    case RopeScalingType::None:
      return "none";
    case RopeScalingType::Linear:
      return "linear";
    case RopeScalingType::Yarn:
      return "yarn";
  }
  return "?";
}

const char* pooling_name(Pooling p) {
  switch (p) {
    case Pooling::None:
      return "none";
    case Pooling::Mean:
      return "mean";
    case Pooling::Cls:
      return "cls";
    case Pooling::Last:
      return "last";
    case Pooling::Rank:
      return "rank";
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

// Every "<arch>.rope.*" key is read here; any other one under that prefix is refused, so a scaling
// this engine does not implement (longrope, mrope sections, ...) cannot be silently ignored.
void read_rope(const gguf::File& f, const std::string& a, ModelConfig& c) {
  const std::string r = a + "rope.", s = r + "scaling.";
  static const char* const kKnown[] = {"freq_base",
                                       "dimension_count",
                                       "scale_linear",
                                       "scaling.type",
                                       "scaling.factor",
                                       "scaling.original_context_length",
                                       "scaling.attn_factor",
                                       "scaling.yarn_beta_fast",
                                       "scaling.yarn_beta_slow",
                                       "scaling.yarn_ext_factor",
                                       "scaling.yarn_log_multiplier",
                                       "scaling.finetuned"};
  for (const auto& [key, value] : f.metadata()) {
    if (!key.starts_with(r)) continue;
    const bool known = std::any_of(std::begin(kKnown), std::end(kKnown),
                                   [&, &key = key](const char* k) { return key == r + k; });
    QWEN_CHECK(known, f.path(), ": key ", key, " is not understood (rope keys read: freq_base, ",
               "dimension_count, scale_linear, scaling.{type, factor, original_context_length, ",
               "attn_factor, yarn_beta_fast, yarn_beta_slow, yarn_ext_factor, yarn_log_multiplier, ",
               "finetuned})");
  }
  c.rope_freq_base = f.get_or<float>(r + "freq_base", 10000.f);
  QWEN_CHECK(c.rope_freq_base > 1.f && std::isfinite(c.rope_freq_base), f.path(), ": ", r,
             "freq_base = ", c.rope_freq_base, " must be > 1");
  if (f.has(r + "dimension_count")) {
    const int n_rot = positive_int(f, r + "dimension_count", f.get<int64_t>(r + "dimension_count"));
    QWEN_CHECK(n_rot == c.head_dim, f.path(), ": ", r, "dimension_count = ", n_rot,
               " differs from the head dim ", c.head_dim, " (partial rotary embedding is not supported)");
  }

  RopeScaling& sc = c.rope_scaling;
  // llama.cpp reads an absent type as linear, which with the default factor 1 is no scaling.
  const std::string type = f.get_or<std::string>(s + "type", "linear");
  if (type == "none") {
    sc.type = RopeScalingType::None;
  } else if (type == "linear") {
    sc.type = RopeScalingType::Linear;
  } else if (type == "yarn") {
    sc.type = RopeScalingType::Yarn;
  } else {
    QWEN_FAIL(f.path(), ": ", s, "type = '", type, "' is not supported (none, linear or yarn)");
  }
  // A float key (or its fallback) that must be finite and pass `ok`, described by `range`.
  auto number = [&](const std::string& key, float fallback, bool (*ok)(float), const char* range) {
    const float v = f.get_or<float>(key, fallback);
    QWEN_CHECK(std::isfinite(v) && ok(v), f.path(), ": ", key, " = ", v, " must be ", range);
    return v;
  };
  auto at_least_one = [](float v) { return v >= 1.f; };
  auto positive = [](float v) { return v > 0.f; };
  // rope.scale_linear is the older name of the factor (llama.cpp reads it when the new one is absent).
  const float legacy = number(r + "scale_linear", 1.f, at_least_one, ">= 1");
  sc.factor = number(s + "factor", legacy, at_least_one, ">= 1");
  if (sc.type == RopeScalingType::None) {
    QWEN_CHECK(sc.factor == 1.f, f.path(), ": ", s, "factor = ", sc.factor, " with ", s,
               "type = 'none' (a factor needs type linear or yarn)");
  }
  sc.n_ctx_orig = c.n_ctx_train;
  if (f.has(s + "original_context_length")) {
    sc.n_ctx_orig =
        positive_int(f, s + "original_context_length", f.get<int64_t>(s + "original_context_length"));
  }
  sc.attn_factor = number(s + "attn_factor", 1.f, positive, "positive");
  for (const char* k : {"yarn_beta_fast", "yarn_beta_slow", "yarn_ext_factor"}) {
    QWEN_CHECK(sc.type == RopeScalingType::Yarn || !f.has(s + k), f.path(), ": ", s, k, " is set but ", s,
               "type = '", type, "' (it applies to yarn only)");
  }
  sc.beta_fast = number(s + "yarn_beta_fast", 32.f, positive, "positive");
  sc.beta_slow = number(s + "yarn_beta_slow", 1.f, positive, "positive");
  QWEN_CHECK(sc.beta_fast >= sc.beta_slow, f.path(), ": ", s, "yarn_beta_fast = ", sc.beta_fast, " is below ",
             s, "yarn_beta_slow = ", sc.beta_slow);
  sc.ext_factor = number(
      s + "yarn_ext_factor", 1.f, [](float v) { return v >= 0.f && v <= 1.f; }, "in [0, 1]");
  // DeepSeek's mscale_all_dim; no qwen2/qwen3/llama model sets it, and llama.cpp's handling of it
  // differs between versions, so it is refused rather than guessed.
  const float log_mul = f.get_or<float>(s + "yarn_log_multiplier", 0.f);
  QWEN_CHECK(log_mul == 0.f, f.path(), ": ", s, "yarn_log_multiplier = ", log_mul,
             " is not supported (only 0)");

  c.n_ctx_max = c.n_ctx_train;
  if (sc.type != RopeScalingType::None) {
    const double extended = std::round(double(sc.factor) * sc.n_ctx_orig);
    c.n_ctx_max = int(std::clamp(extended, double(c.n_ctx_train), double(1 << 30)));
  }
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
  read_rope(f, a, c);
  c.rms_eps = f.get_or<float>(a + "attention.layer_norm_rms_epsilon", 1e-6f);
  QWEN_CHECK(c.rms_eps > 0.f && c.rms_eps < 1.f, f.path(), ": ", a,
             "attention.layer_norm_rms_epsilon = ", c.rms_eps, " is out of range (0, 1)");
  c.rope_mode = c.arch == Arch::Llama ? RopeMode::Normal : RopeMode::Neox;
  c.qkv_bias = c.arch == Arch::Qwen2;
  c.qk_norm = c.arch == Arch::Qwen3;
  if (f.has(a + "pooling_type")) {
    const int64_t p = f.get<int64_t>(a + "pooling_type");
    QWEN_CHECK(p >= 0 && p <= 4, f.path(), ": ", a, "pooling_type = ", p,
               " is not a pooling type (0 none, 1 mean, 2 cls, 3 last, 4 rank)");
    c.pooling = Pooling(p);
  }

  const gguf::TensorInfo& embd = f.tensor("token_embd.weight");
  QWEN_CHECK(embd.n_dims == 2 && embd.ne[0] == c.n_embd, f.path(), ": token_embd.weight has shape ",
             embd.shape_str(), ", expected ", c.n_embd, "xN_VOCAB");
  c.n_vocab = positive_int(f, "token_embd.weight ne1", embd.ne[1]);
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  return c;
}

std::vector<float> rope_inv_freq(const ModelConfig& c, std::span<const float> freq_factors) {
  const int half = c.head_dim / 2;
  QWEN_CHECK(freq_factors.empty() || freq_factors.size() == size_t(half),
             "rope_inv_freq: ", freq_factors.size(), " frequency factors for ", half, " pairs");
  const RopeScaling& sc = c.rope_scaling;
  const double base = c.rope_freq_base, d = c.head_dim, factor = sc.factor;
  // YaRN (HF _compute_yarn_parameters): pairs that turn more than beta_fast times over the
  // original context keep their frequency (extrapolation), those under beta_slow turns are
  // divided by the factor (interpolation), with a linear ramp between the two dims.
  auto corr_dim = [&](double rotations) {
    return d * std::log(sc.n_ctx_orig / (rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
  };
  const double low = std::max(std::floor(corr_dim(sc.beta_fast)), 0.0);
  double high = std::min(std::ceil(corr_dim(sc.beta_slow)), d - 1);
  if (high == low) high += 0.001;  // as HF: no division by zero when the ramp is one dim wide
  std::vector<float> out(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    double extrap = std::pow(base, -2.0 * i / d);
    if (!freq_factors.empty()) extrap /= double(freq_factors[size_t(i)]);
    double inv = extrap;
    if (sc.type == RopeScalingType::Linear) {
      inv = extrap / factor;
    } else if (sc.type == RopeScalingType::Yarn) {
      const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
      const double keep = (1.0 - ramp) * sc.ext_factor;  // share of the extrapolated frequency
      inv = extrap / factor * (1.0 - keep) + extrap * keep;
    }
    out[size_t(i)] = float(inv);
  }
  return out;
}

float rope_mscale(const ModelConfig& c) {
  const RopeScaling& sc = c.rope_scaling;
  double m = sc.attn_factor;
  if (sc.type == RopeScalingType::Yarn && sc.ext_factor != 0.f && sc.factor > 1.f) {
    m *= 0.1 * std::log(double(sc.factor)) + 1.0;
  }
  return float(m);
}

}  // namespace qwen
