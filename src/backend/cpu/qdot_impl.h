// The fast-mode kernels of qdot.h, written once and compiled twice: qdot_generic.cpp (baseline ISA)
// and qdot_avx2.cpp (-mavx2 -mfma), each inside its own namespace QWEN_QDOT_NS. Plain fixed-size
// loops the compiler vectorises, except where it does badly: the integer group sums, the nibble
// and fifth-bit unpacking, and the whole row loop of the 32-element formats have AVX2 versions.
#ifndef QWEN_QDOT_NS
#error "define QWEN_QDOT_NS before including qdot_impl.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/qdot.h"
#include "gguf/quants_impl.h"
#include "util/half.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace qwen::cpu::QWEN_QDOT_NS {

namespace {

inline float half_at(const uint8_t* p) {
  return fp16_to_f32(quants::load_u16(p));
}

void quantize(const float* x, int64_t n, const QuantizedRow& out) {
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.f;
    const float id = d > 0.f ? 1.f / d : 0.f;
    int8_t* q = out.q + b * 32;
    for (int i = 0; i < 32; ++i) q[i] = int8_t(std::nearbyint(xb[i] * id));
    for (int h = 0; h < 2; ++h) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += q[h * 16 + i];
      out.d16[2 * b + h] = d;
      out.s16[2 * b + h] = d * float(sum);
    }
  }
}

// isum[g] = sum_i q[16g + i] * x[16g + i] for g < groups (groups even).
inline void group_sums(const int8_t* q, const int8_t* x, int groups, int32_t* isum) {
  int g = 0;
#ifdef __AVX2__
  // Two groups per 32 bytes: |q| * sign(x, q) on maddubs (unsigned x signed, pairs stay below
  // 2 * 128 * 127 < 2^15), pairs summed by madd. Eight groups are then gathered into one vector by
  // two rounds of hadd (which interleave 128-bit lanes) and a lane permute.
  const __m256i ones = _mm256_set1_epi16(1);
  auto pair = [&](int k) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 16 * k));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16 * k));
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_madd_epi16(p, ones);  // lane 0: group k, lane 1: group k + 1
  };
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (; g + 8 <= groups; g += 8) {
    const __m256i h1 = _mm256_hadd_epi32(pair(g), pair(g + 2));
    const __m256i h2 = _mm256_hadd_epi32(pair(g + 4), pair(g + 6));
    const __m256i s = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(h1, h2), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(isum + g), s);
  }
#endif
  for (; g < groups; ++g) {
    int32_t s = 0;
    for (int i = 0; i < 16; ++i) s += int32_t(q[16 * g + i]) * int32_t(x[16 * g + i]);
    isum[g] = s;
  }
}

// ---- unpackers: block -> q[QK] (signed 8-bit), scale[QK/16], offset[QK/16] so that element i of
// group g is scale[g] * q[i] + offset[g]. Layouts as in gguf/quants.cpp and quants_k.cpp. ----

#ifdef __AVX2__
// The 32 nibbles of qs[16] as bytes: low nibbles are elements 0..15, high nibbles 16..31.
inline __m256i nibbles(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0xF);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
}
// Byte j = 0x10 when bit j of qh is set: byte j first gets byte j / 8 of qh (a shuffle of the
// broadcast word), then its bit j % 8 is tested.
inline __m256i fifth_bits(uint32_t qh) {
  const __m256i spread =
      _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)),
                          _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
  const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}
inline void store32(int8_t* q, __m256i v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), v);
}
#endif

// q[j] = (nibble j | fifth bit j) - bias for the 32-element formats (fifth bits: 0 or 0x10 each).
inline void unpack32(const uint8_t* qs, uint32_t qh, bool has_qh, int bias, int8_t* q) {
#ifdef __AVX2__
  __m256i v = nibbles(qs);
  if (has_qh) v = _mm256_or_si256(v, fifth_bits(qh));
  store32(q, _mm256_sub_epi8(v, _mm256_set1_epi8(int8_t(bias))));
#else
  uint8_t hb[32] = {};
  if (has_qh) quants::expand_high_bits(qh, hb);
  for (int j = 0; j < 16; ++j) {
    q[j] = int8_t(((qs[j] & 0xF) | hb[j]) - bias);
    q[j + 16] = int8_t(((qs[j] >> 4) | hb[j + 16]) - bias);
  }
#endif
}

// Q4_0 (18 bytes): fp16 d; u8 qs[16]. y = d * (q - 8)
void un_q4_0(const uint8_t* b, int8_t* q, float* sc, float*) {
  unpack32(b + 2, 0, false, 8, q);
  sc[0] = sc[1] = half_at(b);
}

// Q4_1 (20 bytes): fp16 d; fp16 m; u8 qs[16]. y = d * q + m
void un_q4_1(const uint8_t* b, int8_t* q, float* sc, float* off) {
  unpack32(b + 4, 0, false, 0, q);
  sc[0] = sc[1] = half_at(b);
  off[0] = off[1] = half_at(b + 2);
}

// Q5_0 (22 bytes): fp16 d; u32 qh (bit j: fifth bit of element j); u8 qs[16]. y = d * (q - 16)
void un_q5_0(const uint8_t* b, int8_t* q, float* sc, float*) {
  unpack32(b + 6, quants::load_u32(b + 2), true, 16, q);
  sc[0] = sc[1] = half_at(b);
}

// Q5_1 (24 bytes): fp16 d; fp16 m; u32 qh; u8 qs[16]. y = d * q + m
void un_q5_1(const uint8_t* b, int8_t* q, float* sc, float* off) {
  unpack32(b + 8, quants::load_u32(b + 4), true, 0, q);
  sc[0] = sc[1] = half_at(b);
  off[0] = off[1] = half_at(b + 2);
}

// Q8_0 (34 bytes): fp16 d; i8 qs[32]. y = d * q
void un_q8_0(const uint8_t* b, int8_t* q, float* sc, float*) {
  std::memcpy(q, b + 2, 32);
  sc[0] = sc[1] = half_at(b);
}

// Q2_K (84 bytes): u8 scales[16]; u8 qs[64]; fp16 d; fp16 dmin.
void un_q2_k(const uint8_t* b, int8_t* q, float* sc, float* off) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = half_at(b + 80), dmin = half_at(b + 82);
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int half = 0; half < 2; ++half) {
        const int g = h * 8 + s * 2 + half;
        const uint8_t* src = qs + h * 32 + half * 16;
        for (int l = 0; l < 16; ++l) q[g * 16 + l] = int8_t((src[l] >> (2 * s)) & 3);
      }
  for (int g = 0; g < 16; ++g) {
    sc[g] = d * float(scales[g] & 0xF);
    off[g] = -(dmin * float(scales[g] >> 4));
  }
}

// Q3_K (110 bytes): u8 hmask[32]; u8 qs[64]; u8 scales[12]; fp16 d.
void un_q3_k(const uint8_t* b, int8_t* q, float* sc, float*) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* s = b + 96;
  const float d = half_at(b + 108);
  for (int k = 0; k < 16; ++k) {
    const int lo = k < 8 ? (s[k] & 0xF) : (s[k - 8] >> 4);
    const int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    sc[k] = d * float((lo | (hi << 4)) - 32);
  }
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 4; ++r)
      for (int half = 0; half < 2; ++half) {
        const int g = h * 8 + r * 2 + half;
        const uint8_t* src = qs + h * 32 + half * 16;
        const uint8_t* hm = hmask + half * 16;
        for (int l = 0; l < 16; ++l) {
          const int low = (src[l] >> (2 * r)) & 3;
          const int high = (hm[l] >> (4 * h + r)) & 1;
          q[g * 16 + l] = int8_t(low - 4 + 4 * high);
        }
      }
}

// The 6-bit scales and mins of Q4_K / Q5_K, one per 32 elements, repeated for both 16-groups.
inline void scale_min_k4(const uint8_t* s, float d, float dmin, float* sc, float* off) {
  for (int j = 0; j < 8; ++j) {
    const int scale = j < 4 ? (s[j] & 63) : ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    const int min = j < 4 ? (s[j + 4] & 63) : ((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    sc[2 * j] = sc[2 * j + 1] = d * float(scale);
    off[2 * j] = off[2 * j + 1] = -(dmin * float(min));
  }
}

// Q4_K (144 bytes): fp16 d; fp16 dmin; u8 scales[12]; u8 qs[128].
void un_q4_k(const uint8_t* b, int8_t* q, float* sc, float* off) {
  scale_min_k4(b + 4, half_at(b), half_at(b + 2), sc, off);
  const uint8_t* qs = b + 16;
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      q[c * 64 + l] = int8_t(qs[c * 32 + l] & 0xF);
      q[c * 64 + 32 + l] = int8_t(qs[c * 32 + l] >> 4);
    }
}

// Q5_K (176 bytes): fp16 d; fp16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128].
void un_q5_k(const uint8_t* b, int8_t* q, float* sc, float* off) {
  scale_min_k4(b + 4, half_at(b), half_at(b + 2), sc, off);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      q[c * 64 + l] = int8_t((qs[c * 32 + l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4));
      q[c * 64 + 32 + l] = int8_t((qs[c * 32 + l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4));
    }
}

// Q6_K (210 bytes): u8 ql[128]; u8 qh[64]; i8 scales[16]; fp16 d.
void un_q6_k(const uint8_t* b, int8_t* q, float* sc, float*) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* s = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 4; ++r)
      for (int l = 0; l < 32; ++l) {
        const int lo = (ql[h * 64 + (r % 2) * 32 + l] >> (4 * (r / 2))) & 0xF;
        const int hi = (qh[h * 32 + l] >> (2 * r)) & 3;
        q[h * 128 + r * 32 + l] = int8_t((lo | (hi << 4)) - 32);
      }
  for (int g = 0; g < 16; ++g) sc[g] = d * float(s[g]);
}

using Unpack = void (*)(const uint8_t*, int8_t*, float*, float*);

// Blocks are unpacked up to 256 elements at a time, so that the group sums and the float pass
// below run over 16 groups even for the 32-element formats.
template <int QK, size_t kBytes, bool kOffset, Unpack Un>
float dot_row(const void* row, const QuantizedRow& x, int64_t n) {
  constexpr int kChunk = QK >= 256 ? 1 : 256 / QK;  // blocks per chunk
  constexpr int kGroups = QK / 16;                  // groups per block
  const uint8_t* p = static_cast<const uint8_t*>(row);
  alignas(32) int8_t q[256];
  alignas(32) float sc[16], off[16];
  alignas(32) int32_t isum[16];
  float acc[16] = {};
  const int64_t nb = n / QK;
  for (int64_t b0 = 0; b0 < nb; b0 += kChunk) {
    const int cb = int(std::min<int64_t>(kChunk, nb - b0));
    for (int c = 0; c < cb; ++c) Un(p + (b0 + c) * kBytes, q + c * QK, sc + c * kGroups, off + c * kGroups);
    const int groups = cb * kGroups;
    const int64_t g0 = b0 * kGroups;
    group_sums(q, x.q + b0 * QK, groups, isum);
    for (int g = 0; g < groups; ++g) acc[g] += sc[g] * x.d16[g0 + g] * float(isum[g]);
    if constexpr (kOffset) {
      for (int g = 0; g < groups; ++g) acc[g] += off[g] * x.s16[g0 + g];
    }
  }
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

#ifdef __AVX2__
// The 32-element formats get one fused loop per row in the AVX2 build: each block's 32 signed
// bytes stay in a register, their dot with x becomes 8 int32 partial sums, and those are scaled
// by d_w * d_x into 8 float accumulators. (Unpacking to memory first, as dot_row does, costs
// twice the time at these block sizes.) Same integer sums as dot_row; the float sums run in
// another order, so the two builds agree to rounding, not bit for bit.
inline __m256i q4_0_bytes(const uint8_t* b) {
  return _mm256_sub_epi8(nibbles(b + 2), _mm256_set1_epi8(8));
}
inline __m256i q4_1_bytes(const uint8_t* b) {
  return nibbles(b + 4);
}
inline __m256i q5_0_bytes(const uint8_t* b) {
  return _mm256_sub_epi8(_mm256_or_si256(nibbles(b + 6), fifth_bits(quants::load_u32(b + 2))),
                         _mm256_set1_epi8(16));
}
inline __m256i q5_1_bytes(const uint8_t* b) {
  return _mm256_or_si256(nibbles(b + 8), fifth_bits(quants::load_u32(b + 4)));
}
inline __m256i q8_0_bytes(const uint8_t* b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
}

// Every 32-element format has its fp16 scale d first and, when it has one, its fp16 minimum m next.
template <size_t kBytes, bool kOffset, __m256i (*Bytes)(const uint8_t*)>
float dot_row32(const void* row, const QuantizedRow& x, int64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(row);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc = _mm256_setzero_ps();
  float offset = 0.f;
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* blk = p + b * kBytes;
    const __m256i qw = Bytes(blk);
    const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + b * 32));
    // |qw| * sign(qx, qw): unsigned x signed for maddubs, pairs below 2^15 (see group_sums).
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
    const __m256 sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(half_at(blk) * x.d16[2 * b]), sums));
    if constexpr (kOffset) offset += half_at(blk + 2) * (x.s16[2 * b] + x.s16[2 * b + 1]);
  }
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q))) + offset;
}
#endif

QDotFn dot_for(GGMLType t) {
#ifdef __AVX2__
  switch (t) {
    case GGMLType::Q4_0:
      return &dot_row32<18, false, q4_0_bytes>;
    case GGMLType::Q4_1:
      return &dot_row32<20, true, q4_1_bytes>;
    case GGMLType::Q5_0:
      return &dot_row32<22, false, q5_0_bytes>;
    case GGMLType::Q5_1:
      return &dot_row32<24, true, q5_1_bytes>;
    case GGMLType::Q8_0:
      return &dot_row32<34, false, q8_0_bytes>;
    default:
      break;
  }
#endif
  switch (t) {
    case GGMLType::Q4_0:
      return &dot_row<32, 18, false, un_q4_0>;
    case GGMLType::Q4_1:
      return &dot_row<32, 20, true, un_q4_1>;
    case GGMLType::Q5_0:
      return &dot_row<32, 22, false, un_q5_0>;
    case GGMLType::Q5_1:
      return &dot_row<32, 24, true, un_q5_1>;
    case GGMLType::Q8_0:
      return &dot_row<32, 34, false, un_q8_0>;
    case GGMLType::Q2_K:
      return &dot_row<256, 84, true, un_q2_k>;
    case GGMLType::Q3_K:
      return &dot_row<256, 110, false, un_q3_k>;
    case GGMLType::Q4_K:
      return &dot_row<256, 144, true, un_q4_k>;
    case GGMLType::Q5_K:
      return &dot_row<256, 176, true, un_q5_k>;
    case GGMLType::Q6_K:
      return &dot_row<256, 210, false, un_q6_k>;
    default:
      return nullptr;
  }
}

}  // namespace

const QDotKernels& kernels() {
  static const QDotKernels k{QWEN_QDOT_ISA, &quantize, &dot_for};
  return k;
}

}  // namespace qwen::cpu::QWEN_QDOT_NS
