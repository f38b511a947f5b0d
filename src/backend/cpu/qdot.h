// The CPU backend's fast mode: dot products of quantized weight rows with activations quantized
// to 8 bits (the scheme of llama.cpp's q8 path), in integer arithmetic. Not the oracle: the exact
// fp32 path (vec_dot / dequantize_row in gguf/) stays what tests compare against.
//
// Activations of n elements (n a multiple of 32) are quantized per 32-element block:
// d = max|x| / 127, q = round(x / d). For every 16 elements g the kernels need d16[g] (the d of
// its 32-block) and s16[g] = d16[g] * sum of those 16 q (for formats with a per-block minimum).
//
// A weight block is unpacked into signed 8-bit integers and, per 16 elements, a float scale and
// minimum, so every format shares one integer dot:
//   row . x = sum over groups g of  scale[g] * d16[g] * sum_i(qw[i] * qx[i])  -  min[g] * s16[g].
// Integer sums are exact; only the float sums' order differs between the generic and AVX2 builds.
#pragma once

#include <cstdint>

#include "gguf/ggml_types.h"

namespace qwen::cpu {

// One token's activations, quantized (buffers owned by the caller).
struct QuantizedRow {
  int8_t* q = nullptr;   // [n]
  float* d16 = nullptr;  // [n / 16]
  float* s16 = nullptr;  // [n / 16]
};

using QuantizeFn = void (*)(const float* x, int64_t n, const QuantizedRow& out);
// row . x for one weight row of n elements (n a multiple of the type's block size).
using QDotFn = float (*)(const void* row, const QuantizedRow& x, int64_t n);

struct QDotKernels {
  const char* isa;  // "avx2" or "generic"
  QuantizeFn quantize;
  // The kernel for weights of type t; nullptr when t has no integer kernel (the float types).
  QDotFn (*dot)(GGMLType t);
};

// The kernels for this CPU: the AVX2 build when the CPU has AVX2 and FMA, else the generic one.
const QDotKernels& qdot_kernels();
// Both builds, for the test that they agree (nullptr when the AVX2 build is not compiled in or
// this CPU lacks AVX2).
const QDotKernels& qdot_generic();
const QDotKernels* qdot_avx2();

}  // namespace qwen::cpu
