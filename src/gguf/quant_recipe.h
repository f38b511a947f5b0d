// Which type each tensor of a model gets when it is quantized to a llama-quantize file type
// ("Q4_K_M"): the per-tensor rules of llama.cpp's llama-quantize for dense models, keyed on GGUF
// tensor names (token_embd, output, blk.N.attn_v, blk.N.ffn_down, blk.N.attn_output).
// docs/QUANTIZE.md has the table.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "gguf/ggml_types.h"

namespace qwen {

struct QuantMix {
  const char* name;    // llama-quantize's name: "Q4_K_M"
  uint32_t file_type;  // general.file_type (llama.cpp's LLAMA_FTYPE_MOSTLY_* number)
  GGMLType base;       // the type of every 2-D weight no rule moves
};

// Parses a type name (case-insensitive; Q3_K, Q4_K, Q5_K mean the _M mixes as in llama-quantize).
// Throws qwen::Error naming the text and listing the valid names.
const QuantMix& parse_mix(std::string_view name);
// "Q8_0, Q4_0, ..." for help and error texts.
std::string mix_names();

// What the rules need to know about the whole model.
struct ModelShape {
  int n_layer = 0;          // <arch>.block_count
  int n_head = 0;           // <arch>.attention.head_count
  int n_head_kv = 0;        // <arch>.attention.head_count_kv
  int n_attn_v = 0;         // tensors named blk.N.attn_v.weight
  bool has_output = false;  // an output.weight (else token_embd doubles as the output)
};

struct TensorPick {
  GGMLType type;
  bool quantized;        // false: the tensor is copied unchanged (1-D, norms, non-weights)
  std::string fallback;  // why a fallback type replaced the rule's choice (empty when none)
};

// The type for one tensor. `pure` puts every quantizable 2-D weight in mix.base (still subject to
// the block-size fallback). Throws qwen::Error naming the tensor when its row length fits no type
// the fallback allows.
TensorPick pick_type(const QuantMix& mix, bool pure, const ModelShape& shape, std::string_view name,
                     int n_dims, int64_t ne0, GGMLType current);

}  // namespace qwen
