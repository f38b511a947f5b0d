// llama-quantize's per-tensor type rules for dense models, restated from llama.cpp's
// src/llama-quant.cpp (llama_tensor_get_type_impl and tensor_type_fallback); docs/QUANTIZE.md
// has them as a table. Layer positions come from the "blk.N." prefix, which for a dense model is
// the counter llama-quantize keeps while it walks the tensors sorted by layer.
#include "gguf/quant_recipe.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>

#include "util/check.h"

namespace qwen {

namespace {

using T = GGMLType;

constexpr std::array<QuantMix, 14> kMixes = {{
    {"Q8_0", 7, T::Q8_0},
    {"Q4_0", 2, T::Q4_0},
    {"Q4_1", 3, T::Q4_1},
    {"Q5_0", 8, T::Q5_0},
    {"Q5_1", 9, T::Q5_1},
    {"Q2_K", 10, T::Q2_K},
    {"Q3_K_S", 11, T::Q3_K},
    {"Q3_K_M", 12, T::Q3_K},
    {"Q3_K_L", 13, T::Q3_K},
    {"Q4_K_S", 14, T::Q4_K},
    {"Q4_K_M", 15, T::Q4_K},
    {"Q5_K_S", 16, T::Q5_K},
    {"Q5_K_M", 17, T::Q5_K},
    {"Q6_K", 18, T::Q6_K},
}};

bool is(const QuantMix& m, const char* name) {
  return std::string_view(m.name) == name;
}

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// Layer index from "blk.N."; -1 for tensors outside the blocks.
int layer_of(std::string_view name) {
  int layer = -1;
  if (std::sscanf(std::string(name).c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

// llama-quantize's "use more bits" layers: the first and last eighth, and every third in between.
bool use_more_bits(int i, int n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

// Weights llama-quantize quantizes: 2-D or more, named *weight, not a norm or an expert router.
bool quantizable(std::string_view name, int n_dims) {
  return n_dims >= 2 && ends_with(name, "weight") && !contains(name, "_norm.weight") &&
         !contains(name, "ffn_gate_inp.weight");
}

T rule_type(const QuantMix& m, const ModelShape& s, std::string_view name, int64_t ne0) {
  const bool is_output = name == "output.weight";
  const bool is_embd = name == "token_embd.weight";
  if (is_output || (is_embd && !s.has_output)) {
    // The output projection (or the embedding that doubles as it) keeps more bits.
    if (ne0 % type_traits(m.base).block_size != 0) return T::Q8_0;
    return m.base == T::Q8_0 ? T::Q8_0 : T::Q6_K;
  }
  if (is_embd) return m.base;
  const int i = layer_of(name);
  if (contains(name, "attn_v.weight") || contains(name, "attn_qkv.weight")) {
    const int n = s.n_attn_v;
    if (is(m, "Q2_K")) return s.n_head / std::max(1, s.n_head_kv) >= 4 ? T::Q4_K : T::Q3_K;
    if (is(m, "Q3_K_M")) return i < 2 ? T::Q5_K : T::Q4_K;
    if (is(m, "Q3_K_L")) return T::Q5_K;
    if ((is(m, "Q4_K_M") || is(m, "Q5_K_M")) && use_more_bits(i, n)) return T::Q6_K;
    if (is(m, "Q4_K_S") && i < 4) return T::Q5_K;
    return m.base;
  }
  if (contains(name, "ffn_down")) {
    const int n = s.n_layer;
    if (is(m, "Q2_K")) return T::Q3_K;
    if (is(m, "Q3_K_M")) return i < n / 16 ? T::Q5_K : T::Q4_K;
    if (is(m, "Q3_K_L")) return T::Q5_K;
    if ((is(m, "Q4_K_M") || is(m, "Q5_K_M")) && use_more_bits(i, n)) return T::Q6_K;
    if (is(m, "Q4_K_S") && i < n / 8) return T::Q5_K;
    return m.base;
  }
  if (contains(name, "attn_output.weight")) {
    if (is(m, "Q2_K")) return T::Q3_K;
    if (is(m, "Q3_K_M")) return T::Q4_K;
    if (is(m, "Q3_K_L")) return T::Q5_K;
  }
  return m.base;
}

}  // namespace

const QuantMix& parse_mix(std::string_view name) {
  std::string up(name);
  for (char& c : up) c = char(std::toupper(static_cast<unsigned char>(c)));
  if (up == "Q3_K" || up == "Q4_K" || up == "Q5_K") up += "_M";  // llama-quantize's aliases
  for (const QuantMix& m : kMixes)
    if (up == m.name) return m;
  QWEN_FAIL("unknown quantization type '", name, "'; one of ", mix_names());
}

std::string mix_names() {
  std::string s;
  for (const QuantMix& m : kMixes) s += (s.empty() ? "" : ", ") + std::string(m.name);
  return s;
}

TensorPick pick_type(const QuantMix& mix, bool pure, const ModelShape& shape, std::string_view name,
                     int n_dims, int64_t ne0, GGMLType current) {
  if (!quantizable(name, n_dims)) return {current, false, ""};
  const T chosen = pure ? mix.base : rule_type(mix, shape, name, ne0);
  if (ne0 % type_traits(chosen).block_size == 0) return {chosen, true, ""};
  // llama-quantize's fallback for rows that do not fill whole blocks: a 32-element format of
  // about the same size, and F16 when not even that fits. The 32-element formats have none.
  T fallback;
  switch (chosen) {
    case T::Q2_K:
    case T::Q3_K:
      fallback = T::Q4_0;
      break;
    case T::Q4_K:
      fallback = T::Q5_0;
      break;
    case T::Q5_K:
      fallback = T::Q5_1;
      break;
    case T::Q6_K:
      fallback = T::Q8_0;
      break;
    default:
      QWEN_FAIL("tensor '", name, "': rows of ", ne0, " elements are not a multiple of the ",
                type_name(chosen), " block size ", type_traits(chosen).block_size,
                " (as llama-quantize, no fallback for ", type_name(chosen), ")");
  }
  if (ne0 % type_traits(fallback).block_size != 0) fallback = T::F16;
  return {fallback, true,
          str("rows of ", ne0, " are not a multiple of ", type_traits(chosen).block_size, ": ",
              type_name(chosen), " -> ", type_name(fallback))};
}

}  // namespace qwen
