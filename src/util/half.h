// Host fp16 / bf16 <-> fp32, bit-exact (round-to-nearest-even, subnormals, inf, NaN kept).
#pragma once

#include <cstdint>
#include <cstring>

namespace qwen {

inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// IEEE binary16 -> binary32 (exact: every half is representable as a float). Written without
// data-dependent loops so that row conversions vectorise: the exponent/mantissa bits are moved into
// float position and rebiased (by 112 for normals, by 224 for inf/NaN, payload kept); subnormals are
// rebuilt exactly as (2^-14 + m * 2^-24) - 2^-14.
inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t em = uint32_t(h & 0x7fff) << 13;
  const uint32_t exp = em & 0x0f800000u;
  // All-ones masks instead of branches or ternaries: GCC then vectorises loops over this function.
  const uint32_t special = 0u - uint32_t(exp == 0x0f800000u);
  const uint32_t subnormal = 0u - uint32_t(exp == 0);
  const uint32_t normal_bits = em + (112u << 23) + (special & (112u << 23));
  const uint32_t sub_bits = f32_to_bits(bits_to_f32(em + (113u << 23)) - bits_to_f32(113u << 23));
  return bits_to_f32(((normal_bits & ~subnormal) | (sub_bits & subnormal)) | sign);
}

// binary32 -> binary16, round to nearest even; NaN stays NaN (quiet), overflow -> inf.
inline uint16_t f32_to_fp16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    if (abs == 0x7f800000u) return sign | 0x7c00;
    return sign | 0x7e00 | uint16_t((abs >> 13) & 0x3ff);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520 -> inf
  if (abs < 0x38800000u) {                       // result is subnormal or zero
    if (abs < 0x33000000u) return sign;          // below half of the smallest subnormal
    const uint32_t e = abs >> 23;
    const uint32_t mant = (abs & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14..24 (13 for the mantissa narrowing + denormal shift)
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | uint16_t(r);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  const uint32_t rem = r & 0x1fff;
  r >>= 13;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;  // may carry into the exponent: correct
  return sign | uint16_t(r);
}

inline float bf16_to_f32(uint16_t b) {
  return bits_to_f32(uint32_t(b) << 16);
}

// binary32 -> bfloat16, round to nearest even; NaN stays NaN (quiet bit set).
inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

}  // namespace qwen
