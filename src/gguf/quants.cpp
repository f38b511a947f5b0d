// Row kernels for the float types and the 32-element ("legacy") quant formats.
//
// Dequantization matches ggml and gguf.quants.dequantize bit for bit: each value is computed with
// the same fp32 operations in the same order (d * q, or d * q + m), never fused into an FMA.
#include <algorithm>

#include "gguf/quants_impl.h"
#include "util/half.h"

#ifdef __clang__
#pragma clang fp contract(off)  // GCC in ISO C++ mode does not contract by default
#endif

namespace qwen::quants {

namespace {

// ---- float types: block size 1, any row length ----

void dequantize_f32(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, size_t(n) * 4);
}

// Rows are read through memcpy: a file may set general.alignment to 1 or 2, so an F32 row need
// not be 4-byte aligned.
inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

float dot_f32(const void* row, const float* x, int64_t n) {
  const uint8_t* a = static_cast<const uint8_t*>(row);
  float acc[kLanes] = {};
  const int64_t main = n - n % kLanes;
  for (int64_t i = 0; i < main; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += load_f32(a + 4 * (i + j)) * x[i + j];
  float tail = 0.f;
  for (int64_t i = main; i < n; ++i) tail += load_f32(a + 4 * i) * x[i];
  return reduce_lanes(acc) + tail;
}

// F16 and BF16 rows: convert a chunk into a float buffer, then dot it.
template <float (*Cvt)(uint16_t)>
void dequantize_half(const void* src, float* dst, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = Cvt(load_u16(p + 2 * i));
}

template <float (*Cvt)(uint16_t)>
float dot_half(const void* row, const float* x, int64_t n) {
  constexpr int64_t kChunk = 256;
  const uint8_t* p = static_cast<const uint8_t*>(row);
  float buf[kChunk];
  float acc[kLanes] = {};
  const int64_t main = n - n % kLanes;
  for (int64_t i0 = 0; i0 < main; i0 += kChunk) {
    const int len = int(std::min(kChunk, main - i0));
    for (int i = 0; i < len; ++i) buf[i] = Cvt(load_u16(p + 2 * (i0 + i)));
    dot_accumulate(buf, x + i0, len, acc);
  }
  float tail = 0.f;
  for (int64_t i = main; i < n; ++i) tail += Cvt(load_u16(p + 2 * i)) * x[i];
  return reduce_lanes(acc) + tail;
}

// ---- 32-element blocks; in every format element j < 16 comes from the low nibble of qs[j] and
// element j + 16 from its high nibble ----

// block_q4_0 (18 bytes): fp16 d; u8 qs[16].  y = d * (q - 8)
void dq_q4_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = fp16_to_f32(load_u16(b));
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(int(qs[j] & 0xF) - 8);
    y[j + 16] = d * float(int(qs[j] >> 4) - 8);
  }
}

// block_q4_1 (20 bytes): fp16 d; fp16 m; u8 qs[16].  y = d * q + m
void dq_q4_1(const uint8_t* __restrict b, float* __restrict y) {
  const float d = fp16_to_f32(load_u16(b));
  const float m = fp16_to_f32(load_u16(b + 2));
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(qs[j] & 0xF) + m;
    y[j + 16] = d * float(qs[j] >> 4) + m;
  }
}

// block_q5_0 (22 bytes): fp16 d; u32 qh (bit i = 5th bit of element i); u8 qs[16].  y = d * (q - 16)
void dq_q5_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = fp16_to_f32(load_u16(b));
  uint8_t hb[32];
  expand_high_bits(load_u32(b + 2), hb);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(int((qs[j] & 0xF) | hb[j]) - 16);
    y[j + 16] = d * float(int((qs[j] >> 4) | hb[j + 16]) - 16);
  }
}

// block_q5_1 (24 bytes): fp16 d; fp16 m; u32 qh; u8 qs[16].  y = d * q + m
void dq_q5_1(const uint8_t* __restrict b, float* __restrict y) {
  const float d = fp16_to_f32(load_u16(b));
  const float m = fp16_to_f32(load_u16(b + 2));
  uint8_t hb[32];
  expand_high_bits(load_u32(b + 4), hb);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float((qs[j] & 0xF) | hb[j]) + m;
    y[j + 16] = d * float((qs[j] >> 4) | hb[j + 16]) + m;
  }
}

// block_q8_0 (34 bytes): fp16 d; i8 qs[32].  y = q * d
void dq_q8_0(const uint8_t* __restrict b, float* __restrict y) {
  const float d = fp16_to_f32(load_u16(b));
  const int8_t* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = float(qs[j]) * d;
}

}  // namespace

RowKernels basic_kernels(GGMLType t) {
  switch (t) {
    case GGMLType::F32:
      return {&dequantize_f32, &dot_f32};
    case GGMLType::F16:
      return {&dequantize_half<fp16_to_f32>, &dot_half<fp16_to_f32>};
    case GGMLType::BF16:
      return {&dequantize_half<bf16_to_f32>, &dot_half<bf16_to_f32>};
    case GGMLType::Q4_0:
      return block_kernels<32, 18, dq_q4_0>();
    case GGMLType::Q4_1:
      return block_kernels<32, 20, dq_q4_1>();
    case GGMLType::Q5_0:
      return block_kernels<32, 22, dq_q5_0>();
    case GGMLType::Q5_1:
      return block_kernels<32, 24, dq_q5_1>();
    case GGMLType::Q8_0:
      return block_kernels<32, 34, dq_q8_0>();
    default:
      return {};
  }
}

}  // namespace qwen::quants
