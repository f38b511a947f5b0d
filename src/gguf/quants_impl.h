// Internal to src/gguf: per-type row kernels and the templates that build them from a block
// dequantizer. Every quantized row kernel works one block at a time: the block is expanded into a
// small float buffer (fixed-size loops the compiler vectorises), then dotted with x into several
// independent accumulators (so the reduction vectorises without -ffast-math).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "gguf/ggml_types.h"

namespace qwen::quants {

struct RowKernels {
  void (*dequantize)(const void* src, float* dst, int64_t n) = nullptr;
  float (*dot)(const void* row, const float* x, int64_t n) = nullptr;
};

// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (quants.cpp); empty for any other type.
RowKernels basic_kernels(GGMLType t);
// Q2_K .. Q6_K (quants_k.cpp); empty for any other type.
RowKernels k_kernels(GGMLType t);

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q5 fifth bits: table entry b holds 8 bytes, byte k = 0x10 when bit k of b is set. Expanding qh
// through it (instead of shifting by the element index) keeps the block loops vectorisable.
inline constexpr std::array<uint64_t, 256> kHighBitBytes = [] {
  std::array<uint64_t, 256> t{};
  for (uint64_t b = 0; b < 256; ++b)
    for (int k = 0; k < 8; ++k)
      if (b >> k & 1) t[b] |= uint64_t(0x10) << (8 * k);
  return t;
}();

// hb[j] = 0x10 if bit j of qh is set, else 0 (little-endian byte order, as GGUF).
inline void expand_high_bits(uint32_t qh, uint8_t* hb) {
  for (int i = 0; i < 4; ++i) std::memcpy(hb + 8 * i, &kHighBitBytes[(qh >> (8 * i)) & 0xff], 8);
}

constexpr int kLanes = 16;  // independent partial sums: enough for two AVX-512 or four AVX2 registers

inline float reduce_lanes(const float* acc) {
  float s[kLanes / 2];
  for (int j = 0; j < kLanes / 2; ++j) s[j] = acc[j] + acc[j + kLanes / 2];
  for (int w = kLanes / 4; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) s[j] += s[j + w];
  return s[0];
}

// acc[j] += sum over i = j (mod kLanes) of a[i] * b[i], n a multiple of kLanes.
inline void dot_accumulate(const float* a, const float* b, int n, float* acc) {
  for (int i = 0; i < n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
}

// Block-wise row kernels from `Dq(block_bytes, out[QK])`.
template <int QK, size_t kBytes, void (*Dq)(const uint8_t*, float*)>
void dequantize_blocks(const void* src, float* dst, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / QK; ++b) Dq(p + b * kBytes, dst + b * QK);
}

template <int QK, size_t kBytes, void (*Dq)(const uint8_t*, float*)>
float dot_blocks(const void* row, const float* x, int64_t n) {
  static_assert(QK % kLanes == 0);
  const uint8_t* p = static_cast<const uint8_t*>(row);
  float buf[QK];
  float acc[kLanes] = {};
  for (int64_t b = 0; b < n / QK; ++b) {
    Dq(p + b * kBytes, buf);
    dot_accumulate(buf, x + b * QK, QK, acc);
  }
  return reduce_lanes(acc);
}

template <int QK, size_t kBytes, void (*Dq)(const uint8_t*, float*)>
RowKernels block_kernels() {
  return {&dequantize_blocks<QK, kBytes, Dq>, &dot_blocks<QK, kBytes, Dq>};
}

}  // namespace qwen::quants
