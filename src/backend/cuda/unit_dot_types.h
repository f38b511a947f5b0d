// The weight types whose fast decode GEMV takes integer dot products with x quantized to 16 bits
// (UnitDot in quant_dot.cuh). A plain C++ header, so that the host-compiled tests, which cannot
// include the .cuh files, choose their tolerances from the same list.
#pragma once

#include "gguf/ggml_types.h"

namespace qwen::cuda {

constexpr bool has_unit_dot(GGMLType t) {
  return t == GGMLType::Q8_0 || t == GGMLType::Q4_0 || t == GGMLType::Q4_1 || t == GGMLType::Q5_0 ||
         t == GGMLType::Q5_1 || t == GGMLType::Q4_K || t == GGMLType::Q5_K;
}

}  // namespace qwen::cuda
