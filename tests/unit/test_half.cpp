// fp16 / bf16 <-> fp32 conversions (util/half.h), checked exhaustively over every 16-bit input and
// against independent references for the fp32 -> 16-bit direction. Metric: bit equality (NaN:
// NaN-ness and sign), tolerance 0.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "util/half.h"

namespace {

using qwen::bf16_to_f32;
using qwen::bits_to_f32;
using qwen::f32_to_bf16;
using qwen::f32_to_bits;
using qwen::f32_to_fp16;
using qwen::fp16_to_f32;

// Value of a binary16 bit pattern computed in double from the definition.
double fp16_value(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(double(mant), -24);
  if (exp == 31) return mant ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  return sign * std::ldexp(double(1024 + mant), exp - 25);
}

// Reference fp32 -> fp16: nearest of the two neighbouring halves by exact double arithmetic, ties
// to the even mantissa, at or past 65520 (the midpoint between 65504 and 2^16) to inf.
uint16_t ref_f32_to_fp16(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(double(f));
  if (a >= 65520.0) return sign | 0x7c00;
  // Positive finite halves 0..0x7bff are ordered like their bit patterns.
  uint16_t lo = 0, hi = 0x7bff;
  while (lo < hi) {  // largest pattern with value <= a
    const uint16_t mid = uint16_t((lo + hi + 1) / 2);
    if (fp16_value(mid) <= a)
      lo = mid;
    else
      hi = uint16_t(mid - 1);
  }
  if (fp16_value(lo) == a || lo == 0x7bff) return sign | lo;
  const double below = a - fp16_value(lo), above = fp16_value(uint16_t(lo + 1)) - a;
  if (below < above || (below == above && (lo & 1) == 0)) return sign | lo;
  return sign | uint16_t(lo + 1);
}

// Floats that probe fp32 -> 16-bit rounding: every half value, the midpoints between neighbours
// and one float ulp either side of them, plus a stride through the whole fp32 bit space.
std::vector<float> probe_floats() {
  std::vector<float> v;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float x = fp16_to_f32(uint16_t(h));
    const float mid = float((fp16_value(uint16_t(h)) + fp16_value(uint16_t(h + 1))) / 2);
    for (const float y : {x, mid, std::nextafter(mid, 0.f), std::nextafter(mid, INFINITY)}) {
      v.push_back(y);
      v.push_back(-y);
    }
  }
  for (uint64_t u = 0; u <= 0xffffffffull; u += 4093) v.push_back(bits_to_f32(uint32_t(u)));
  for (const float y : {65504.f, 65519.99f, 65520.f, 1e10f, INFINITY, -INFINITY, 5.96e-8f, 2.98e-8f, 2.99e-8f,
                        std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min()})
    v.push_back(y);
  return v;
}

TEST(Half, Fp16ToF32ExhaustiveMatchesDefinition) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_to_f32(uint16_t(h));
    const double want = fp16_value(uint16_t(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << h;
      // Payload kept: the 10 mantissa bits land in the top of the float mantissa.
      ASSERT_EQ(f32_to_bits(f), (uint32_t(h & 0x8000) << 16) | 0x7f800000u | (uint32_t(h & 0x3ff) << 13))
          << h;
    } else {
      ASSERT_EQ(double(f), want) << std::hex << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << h;  // -0 stays -0
    }
  }
}

TEST(Half, Fp16RoundTripExhaustive) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
    const uint16_t back = f32_to_fp16(fp16_to_f32(uint16_t(h)));
    if (nan) {
      ASSERT_EQ(back & 0x7c00, 0x7c00) << std::hex << h;
      ASSERT_NE(back & 0x3ff, 0) << std::hex << h;
      ASSERT_EQ(back & 0x8000, h & 0x8000) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(Half, F32ToFp16MatchesExactReference) {
  for (const float f : probe_floats()) {
    if (std::isnan(f)) {
      const uint16_t h = f32_to_fp16(f);
      ASSERT_TRUE((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) << f32_to_bits(f);
      continue;
    }
    ASSERT_EQ(f32_to_fp16(f), ref_f32_to_fp16(f))
        << std::hexfloat << f << " bits " << std::hex << f32_to_bits(f);
  }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__FLT16_MAX__)
TEST(Half, F32ToFp16MatchesCompilerFloat16) {
  for (const float f : probe_floats()) {
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    const uint16_t got = f32_to_fp16(f);
    if (std::isnan(f)) {
      ASSERT_EQ(got & 0x7c00, 0x7c00);
      ASSERT_EQ(want & 0x7c00, 0x7c00);
      continue;
    }
    ASSERT_EQ(got, want) << std::hexfloat << f;
  }
}
#else
TEST(Half, F32ToFp16MatchesCompilerFloat16) {
  GTEST_SKIP() << "this compiler has no _Float16 in C++";
}
#endif

TEST(Half, Bf16ToF32Exhaustive) {
  for (uint32_t b = 0; b < 65536; ++b) ASSERT_EQ(f32_to_bits(bf16_to_f32(uint16_t(b))), b << 16) << b;
}

TEST(Half, Bf16RoundTripExhaustive) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t back = f32_to_bf16(bf16_to_f32(uint16_t(b)));
    if ((b & 0x7f80) == 0x7f80 && (b & 0x7f)) {
      ASSERT_EQ(back, b | 0x40) << b;  // NaN: quiet bit set, payload and sign kept
    } else {
      ASSERT_EQ(back, b) << b;
    }
  }
}

// Reference fp32 -> bf16: nearest neighbour by exact double arithmetic, ties to even; values past
// the largest finite bf16 by half an ulp or more go to inf.
uint16_t ref_f32_to_bf16(float f) {
  const uint32_t u = f32_to_bits(f);
  const uint16_t lo = uint16_t(u >> 16);
  if ((u & 0xffff) == 0) return lo;
  const uint16_t hi = uint16_t(lo + 1);  // next pattern away from zero (may be inf)
  const double a = std::fabs(double(f));
  const double below = a - std::fabs(double(bf16_to_f32(lo)));
  const double hi_mag = (hi & 0x7fff) == 0x7f80 ? std::ldexp(1.0, 128) : std::fabs(double(bf16_to_f32(hi)));
  const double above = hi_mag - a;
  if (below < above || (below == above && (lo & 1) == 0)) return lo;
  return hi;
}

TEST(Half, F32ToBf16MatchesExactReference) {
  std::vector<float> probes = probe_floats();
  for (uint32_t b = 0; b < 65536; ++b)  // every bf16 midpoint (a tie) and one float ulp either side
    for (const uint32_t low : {0x7fffu, 0x8000u, 0x8001u}) probes.push_back(bits_to_f32((b << 16) | low));
  for (const float f : probes) {
    if (std::isnan(f)) {
      const uint16_t b = f32_to_bf16(f);
      ASSERT_TRUE((b & 0x7f80) == 0x7f80 && (b & 0x7f)) << f32_to_bits(f);
      continue;
    }
    ASSERT_EQ(f32_to_bf16(f), ref_f32_to_bf16(f))
        << std::hexfloat << f << " bits " << std::hex << f32_to_bits(f);
  }
}

}  // namespace
