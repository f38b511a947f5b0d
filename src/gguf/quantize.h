// CPU quantizers: fp32 rows into ggml block formats, bit-compatible with ggml's layouts (the
// dequantizers in quants.cpp / quants_k.cpp read them back).
#pragma once

#include <cstdint>

#include "gguf/ggml_types.h"

namespace qwen {

// How a block's scale is chosen.
//   Nearest: the plain recipe. For Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 it is ggml's reference quantizer,
//     equal bit for bit to gguf.quants.quantize; for the K types each sub-block maps its extreme
//     value to the end of the integer range and rounds to nearest.
//   Search: a small grid of candidate scales per (sub-)block, each refitted by least squares on
//     the integers it rounds to, keeping the one with the least squared error (never worse than
//     Nearest on the block before its scale is rounded to fp16 or to the super-block's grid); the K
//     types then also try the neighbouring integer sub-block scales (and offsets). Every type but
//     Q8_0.
enum class ScaleSearch { Nearest, Search };

// True for the types quantize_row can write: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K,
// Q3_K, Q4_K, Q5_K, Q6_K.
bool can_quantize(GGMLType t);

// The scale choice quantize_row uses by default: Search for every quantized type but Q8_0.
ScaleSearch default_search(GGMLType t);

// dst = src[0..n) in type t; n is a multiple of t's block size and dst holds row_bytes(t, n).
// Throws qwen::Error naming the type when it cannot be written.
void quantize_row(GGMLType t, const float* src, void* dst, int64_t n);
void quantize_row(GGMLType t, const float* src, void* dst, int64_t n, ScaleSearch search);

}  // namespace qwen
