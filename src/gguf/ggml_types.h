// The ggml tensor types a GGUF file can hold, their block layouts, and CPU dequant / dot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace qwen {

// Values are the on-disk ggml_type ids.
enum class GGMLType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

struct TypeTraits {
  const char* name;    // "Q4_K"
  int block_size;      // elements per block (1 for F32/F16/BF16)
  size_t block_bytes;  // bytes per block
  bool supported;      // we can dequantize / dot it
};

// nullptr when `id` is not a ggml type this build knows at all.
const TypeTraits* type_traits(uint32_t id);
const TypeTraits& type_traits(GGMLType t);
const char* type_name(GGMLType t);
// Parses "Q8_0", "f16", ... (case-insensitive); throws qwen::Error naming the text.
GGMLType parse_type(const std::string& name);

// Bytes of a row of n elements; n must be a multiple of the block size.
size_t row_bytes(GGMLType t, int64_t n);

// dst[0..n) = dequantized row. n is a multiple of the block size.
void dequantize_row(GGMLType t, const void* src, float* dst, int64_t n);

// sum_i row[i] * x[i] for one quantized row of n elements and an fp32 vector.
float vec_dot(GGMLType t, const void* row, const float* x, int64_t n);

// The same kernels as plain function pointers, so a matmul can look the type up once per matrix
// instead of once per row. Both throw qwen::Error naming the type when it has no CPU kernel.
using DequantizeRowFn = void (*)(const void* src, float* dst, int64_t n);
using VecDotFn = float (*)(const void* row, const float* x, int64_t n);
DequantizeRowFn dequantize_row_fn(GGMLType t);
VecDotFn vec_dot_fn(GGMLType t);

}  // namespace qwen
