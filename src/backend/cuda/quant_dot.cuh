// The decode GEMV's fast arithmetic (gemv_dot_kernel in matmul.cu): integer dot products of
// quantized weights with x quantized to 16 bits, for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q5_K.
// (A Q6_K unit, whose 210-byte blocks sit 2 bytes off alignment, took 19 four-byte loads per unit
// and lost to the fp32 GEMV: docs/BENCHMARKS.md.)
//
// x is quantized per 32-element block b (xq_quantize): s = amax / 127, xh = rint(x / s) in
// [-127, 127], xl = rint((x - s xh) 256 / s) clamped to [-127, 127], so that
// x ~ (s / 256) (256 xh + xl), within s / 512 (+ the clamp) = 2^-16 of the block's largest |x|.
// (The fast prefill rounds x to fp16, 2^-11 of each element; the exact GEMV keeps fp32 x.)
// A weight unit (UnitDot<T>) multiplies its integer quants by xh and by xl with __dp4a (four
// products and a sum per instruction, exact in int32), and applies its scales in fp32 once per 32
// elements: T = 256 sum(q xh) + sum(q xl), and sum(w x) = d (s / 256) (T - offset I) with
// I = sum(256 xh + xl): about 1.3 instructions per 4-bit weight, where the exact GEMV decodes every
// weight to fp32 in about 7 (docs/BENCHMARKS.md has what this bought).
// All of it is __host__ __device__: tests/ops/test_quant_dot.cu runs it on the CPU.
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/cuda/quant.cuh"
#include "backend/cuda/unit_dot_types.h"

namespace qwen::cuda {

constexpr int kXqBlock = 32;

// __dp4a(a, b, c): c + the sum of the products of the four signed bytes of a and of b.
QWEN_HD int dp4a(uint32_t a, uint32_t b, int c) {
#ifdef __CUDA_ARCH__
  return __dp4a(int(a), int(b), c);
#else
  for (int i = 0; i < 4; ++i) c += int(int8_t(a >> (8 * i))) * int(int8_t(b >> (8 * i)));
  return c;
#endif
}

// The scale of a block of x with largest magnitude amax, divided by 256 (the factor of T): NaN
// when amax is not finite, so a non-finite x makes its outputs NaN as in the exact GEMV.
QWEN_HD float xq_scale(float amax) {
  return amax <= 3.4028235e38f ? amax / 127.f * (1.f / 256.f) : NAN;
}
// The two quants of one element x of a block whose largest magnitude is amax.
QWEN_HD void xq_quantize(float x, float amax, int& h, int& l) {
  if (!(amax > 0.f && amax <= 3.4028235e38f)) {
    h = l = 0;
    return;
  }
  const float s = amax / 127.f, inv = 127.f / amax;
  const float fh = rintf(x * inv);  // |x| <= amax, so |fh| <= 127
  const float r = fmaf(-fh, s, x);
  const float fl = fminf(fmaxf(rintf(r * (256.f * inv)), -127.f), 127.f);
  h = int(fh);
  l = int(fl);
}

// x of one token, quantized: for n elements, xh and xl as words of 4 consecutive elements
// (n / 4 each), per 32-block its xq_scale (n / 32) and per 16 elements I16 = sum(256 xh + xl)
// (n / 16). Lives in a GEMV block's shared memory (gemv_dot_kernel) or, for tests, in host memory.
struct XqRow {
  uint32_t* h;
  uint32_t* l;
  float* sc;
  int* isum;
  static constexpr size_t bytes(int64_t n) { return size_t(n) * 2 + size_t(n / 32) * 4 + size_t(n / 16) * 4; }
  QWEN_HD static XqRow carve(void* p, int64_t n) {
    uint8_t* b = static_cast<uint8_t*>(p);
    XqRow r;
    r.h = reinterpret_cast<uint32_t*>(b);
    r.l = reinterpret_cast<uint32_t*>(b + n);
    r.sc = reinterpret_cast<float*>(b + 2 * n);
    r.isum = reinterpret_cast<int*>(b + 2 * n + (n / 32) * 4);
    return r;
  }
};

// Host twin of the GEMV's quantization of x (stage_xq in matmul.cu: 8 lanes per block there, the
// same values).
inline void xq_row_host(const float* x, int64_t n, XqRow q) {
  for (int64_t b = 0; b < n / kXqBlock; ++b) {
    float amax = 0.f;
    for (int k = 0; k < kXqBlock; ++k) {
      const float a = std::fabs(x[kXqBlock * b + k]);
      amax = a > amax || a != a ? a : amax;
    }
    int sums[2] = {0, 0};
    for (int k = 0; k < kXqBlock; ++k) {
      int h, l;
      xq_quantize(x[kXqBlock * b + k], amax, h, l);
      const int64_t e = kXqBlock * b + k;
      const uint32_t sh = 8 * uint32_t(e % 4);
      q.h[e / 4] = (q.h[e / 4] & ~(0xffu << sh)) | (uint32_t(uint8_t(h)) << sh);
      q.l[e / 4] = (q.l[e / 4] & ~(0xffu << sh)) | (uint32_t(uint8_t(l)) << sh);
      sums[k / 16] += 256 * h + l;
    }
    q.sc[b] = xq_scale(amax);
    q.isum[2 * b] = sums[0];
    q.isum[2 * b + 1] = sums[1];
  }
}

// 16 elements [16 p, 16 p + 16) of a quantized row as a unit reads them: 4 words of xh, 4 of xl,
// their 32-block's scale and I16.
struct Xq16 {
  uint32_t h[4], l[4];
  float sc;
  int isum;
  QWEN_HD void load(const XqRow& x, int64_t p) {
    const uint4 vh = reinterpret_cast<const uint4*>(x.h)[p];
    const uint4 vl = reinterpret_cast<const uint4*>(x.l)[p];
    h[0] = vh.x, h[1] = vh.y, h[2] = vh.z, h[3] = vh.w;
    l[0] = vl.x, l[1] = vl.y, l[2] = vl.z, l[3] = vl.w;
    sc = x.sc[p / 2];
    isum = x.isum[p];
  }
};
// T = 256 sum(q xh) + sum(q xl) over 16 elements whose quants are the bytes of q[0..3].
QWEN_HD int dot16(const uint32_t q[4], const Xq16& x) {
  int th = 0, tl = 0;
  QWEN_UNROLL
  for (int i = 0; i < 4; ++i) {
    th = dp4a(q[i], x.h[i], th);
    tl = dp4a(q[i], x.l[i], tl);
  }
  return 256 * th + tl;
}

// A weight unit: load(row, u) issues the loads of unit u of a row (kElems elements, kWords
// registers); dot(x) is sum(w x^) over them, x^ the quantized x, with x the unit's Xq16 pieces
// (kPieces, loaded once per unit for all rows of a warp by load_x).
template <GGMLType T>
struct UnitDot;

// The low and high nibbles of the 4 words w (elements k and k + 16 of a 32-element block), with
// 5th bits from the 32 bits of qh (bit k of element k) when there are any.
QWEN_HD void nibbles16(const uint32_t w[4], uint32_t lo[4], uint32_t hi[4]) {
  QWEN_UNROLL
  for (int i = 0; i < 4; ++i) lo[i] = w[i] & 0x0f0f0f0fu, hi[i] = (w[i] >> 4) & 0x0f0f0f0fu;
}
// Bits 0..3 of b as bit 4 of bytes 0..3 (the four products with 1, 2^7, 2^14, 2^21 land on
// distinct bits, so nothing carries).
QWEN_HD uint32_t bits_to_bytes4(uint32_t b) {
  return ((b & 0xfu) * 0x00204081u & 0x01010101u) << 4;
}
QWEN_HD void nibbles16_qh(const uint32_t w[4], uint32_t qh, uint32_t lo[4], uint32_t hi[4]) {
  nibbles16(w, lo, hi);
  QWEN_UNROLL
  for (int i = 0; i < 4; ++i) {
    lo[i] |= bits_to_bytes4(qh >> (4 * i));
    hi[i] |= bits_to_bytes4(qh >> (16 + 4 * i));
  }
}

// A unit of one 32-element block (x pieces 2u and 2u + 1).
struct BlockUnit {
  static constexpr int kElems = 32, kPieces = 2;
  QWEN_HD static void load_x(const XqRow& x, int64_t u, Xq16 p[kPieces]) {
    p[0].load(x, 2 * u);
    p[1].load(x, 2 * u + 1);
  }
  // sum(w x^) = (s / 256) (d T + m I) for the block's integer sum T and I = sum(256 xh + xl).
  QWEN_HD static float scaled(float d, float m, int t, const Xq16 p[kPieces]) {
    return fmaf(d, float(t), m * float(p[0].isum + p[1].isum)) * p[0].sc;
  }
};

// A block {half d; u8 payload[4N]} at a 2-byte aligned address (load_d_words).
template <GGMLType T, int N>
struct DWordsUnit : BlockUnit {
  static constexpr int kWords = N + 1;
  uint32_t d, w[N];
  QWEN_HD void load(const uint8_t* row, int64_t u) { load_d_words<N>(row + u * BlockInfo<T>::kBytes, d, w); }
  QWEN_HD float scale() const { return half_to_float(uint16_t(d)); }
};

// Q8_0 {half d; i8 qs[32]}: w = d q.
template <>
struct UnitDot<GGMLType::Q8_0> : DWordsUnit<GGMLType::Q8_0, 8> {
  QWEN_HD float dot(const Xq16 p[kPieces]) const {
    return scaled(scale(), 0.f, dot16(w, p[0]) + dot16(w + 4, p[1]), p);
  }
};

// Q4_0 {half d; u8 qs[16]}: element k < 16 is the low nibble of qs[k], k >= 16 the high nibble of
// qs[k - 16]; w = d (q - 8).
template <>
struct UnitDot<GGMLType::Q4_0> : DWordsUnit<GGMLType::Q4_0, 4> {
  QWEN_HD float dot(const Xq16 p[kPieces]) const {
    uint32_t lo[4], hi[4];
    nibbles16(w, lo, hi);
    return scaled(scale(), 0.f, dot16(lo, p[0]) + dot16(hi, p[1]) - 8 * (p[0].isum + p[1].isum), p);
  }
};

// Q4_1 {half d; half m; u8 qs[16]} (20 bytes, 4-byte aligned): nibbles as Q4_0; w = d q + m.
template <>
struct UnitDot<GGMLType::Q4_1> : BlockUnit {
  static constexpr int kWords = 5;
  uint32_t dm, w[4];
  QWEN_HD void load(const uint8_t* row, int64_t u) {
    const uint8_t* b = row + u * BlockInfo<GGMLType::Q4_1>::kBytes;
    dm = load_u32_a4(b);
    load16_a4(b + 4, w);
  }
  QWEN_HD float dot(const Xq16 p[kPieces]) const {
    uint32_t lo[4], hi[4];
    nibbles16(w, lo, hi);
    return scaled(half_to_float(uint16_t(dm & 0xffffu)), half_to_float(uint16_t(dm >> 16)),
                  dot16(lo, p[0]) + dot16(hi, p[1]), p);
  }
};

// Q5_0 {half d; u8 qh[4]; u8 qs[16]} (22 bytes, 2-byte aligned): q = nibble (as Q4_0) | bit k of qh
// << 4; w = d (q - 16). Payload word 0 is qh, words 1..4 qs.
template <>
struct UnitDot<GGMLType::Q5_0> : DWordsUnit<GGMLType::Q5_0, 5> {
  QWEN_HD float dot(const Xq16 p[kPieces]) const {
    uint32_t lo[4], hi[4];
    nibbles16_qh(w + 1, w[0], lo, hi);
    return scaled(scale(), 0.f, dot16(lo, p[0]) + dot16(hi, p[1]) - 16 * (p[0].isum + p[1].isum), p);
  }
};

// Q5_1 {half d; half m; u8 qh[4]; u8 qs[16]} (24 bytes, 4-byte aligned): q as Q5_0; w = d q + m.
template <>
struct UnitDot<GGMLType::Q5_1> : BlockUnit {
  static constexpr int kWords = 6;
  uint32_t dm, qh, w[4];
  QWEN_HD void load(const uint8_t* row, int64_t u) {
    const uint8_t* b = row + u * BlockInfo<GGMLType::Q5_1>::kBytes;
    dm = load_u32_a4(b);
    qh = load_u32_a4(b + 4);
    load16_a4(b + 8, w);
  }
  QWEN_HD float dot(const Xq16 p[kPieces]) const {
    uint32_t lo[4], hi[4];
    nibbles16_qh(w, qh, lo, hi);
    return scaled(half_to_float(uint16_t(dm & 0xffffu)), half_to_float(uint16_t(dm >> 16)),
                  dot16(lo, p[0]) + dot16(hi, p[1]), p);
  }
};

// Q4_K / Q5_K unit u: the 64 elements [64 j, 64 j + 64) of super-block u / 4 (j = u % 4),
// sub-blocks 2j (low nibbles of quant bytes 32 j + k) and 2j + 1 (high nibbles); w = d sc q - dmin
// m per sub-block, sc and m 6 bits each from the 12 scale bytes. x pieces 4u .. 4u + 3.
struct K4PairUnit {
  static constexpr int kElems = 64, kPieces = 4;
  uint32_t dm, sc[3], w[8];  // w: the unit's 32 quant bytes
  int j;
  QWEN_HD const uint8_t* load_head(const uint8_t* row, int64_t u, int block_bytes) {
    const uint8_t* b = row + (u / 4) * block_bytes;
    j = int(u % 4);
    const uint4 v = *reinterpret_cast<const uint4*>(b);
    dm = v.x, sc[0] = v.y, sc[1] = v.z, sc[2] = v.w;
    return b;
  }
  // The 32 quant bytes of pair j from the super-block's 128 at q.
  QWEN_HD void load_qs(const uint8_t* q) {
    load16_a16(q + 32 * j, w);
    load16_a16(q + 32 * j + 16, w + 4);
  }
  QWEN_HD void nibbles(uint32_t lo[8], uint32_t hi[8]) const {
    nibbles16(w, lo, hi);
    nibbles16(w + 4, lo + 4, hi + 4);
  }
  QWEN_HD static void load_x(const XqRow& x, int64_t u, Xq16 p[kPieces]) {
    QWEN_UNROLL
    for (int i = 0; i < kPieces; ++i) p[i].load(x, 4 * u + i);
  }
  // lo/hi[0..3] and [4..7]: the quants of sub-blocks 2j and 2j + 1, elements [0, 16) and [16, 32).
  QWEN_HD float combine(const uint32_t lo[8], const uint32_t hi[8], const Xq16 p[kPieces]) const {
    // The scales and mins of sub-blocks 2j, 2j + 1 as two bytes each (k4_scale_min for a pair,
    // without selects per byte).
    const uint32_t sh = 16 * uint32_t(j % 2);
    const uint32_t a = sc[0] >> sh, b = sc[1] >> sh, c = sc[2] >> sh;
    const bool low = j < 2;
    const uint32_t s2 = low ? a & 0x3f3fu : (c & 0x0f0fu) | ((a >> 2) & 0x3030u);
    const uint32_t m2 = low ? b & 0x3f3fu : ((c >> 4) & 0x0f0fu) | ((b >> 2) & 0x3030u);
    const int t0 = dot16(lo, p[0]) + dot16(lo + 4, p[1]), t1 = dot16(hi, p[2]) + dot16(hi + 4, p[3]);
    const float d = half_to_float(uint16_t(dm & 0xffffu)), dmin = half_to_float(uint16_t(dm >> 16));
    const float v0 =
        fmaf(d * float(s2 & 0xffu), float(t0), -(dmin * float(m2 & 0xffu)) * float(p[0].isum + p[1].isum));
    const float v1 =
        fmaf(d * float(s2 >> 8), float(t1), -(dmin * float(m2 >> 8)) * float(p[2].isum + p[3].isum));
    return fmaf(v1, p[2].sc, v0 * p[0].sc);
  }
};

// Q4_K {half d; half dmin; u8 scales[12]; u8 qs[128]} (144 bytes).
template <>
struct UnitDot<GGMLType::Q4_K> : K4PairUnit {
  static constexpr int kWords = 13;
  QWEN_HD void load(const uint8_t* row, int64_t u) {
    load_qs(load_head(row, u, BlockInfo<GGMLType::Q4_K>::kBytes) + 16);
  }
  QWEN_HD float dot(const Xq16 p[kPieces]) const {
    uint32_t lo[8], hi[8];
    nibbles(lo, hi);
    return combine(lo, hi, p);
  }
};

// Q5_K {half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} (176 bytes): as Q4_K, with 5th
// bits 2j (low nibbles) and 2j + 1 (high) of qh[k].
template <>
struct UnitDot<GGMLType::Q5_K> : K4PairUnit {
  static constexpr int kWords = 21;
  uint32_t qh[8];
  QWEN_HD void load(const uint8_t* row, int64_t u) {
    const uint8_t* b = load_head(row, u, BlockInfo<GGMLType::Q5_K>::kBytes);
    load16_a16(b + 16, qh);
    load16_a16(b + 32, qh + 4);
    load_qs(b + 48);
  }
  QWEN_HD float dot(const Xq16 p[kPieces]) const {
    uint32_t lo[8], hi[8];
    nibbles(lo, hi);
    QWEN_UNROLL
    for (int i = 0; i < 8; ++i) {
      lo[i] |= ((qh[i] >> (2 * j)) & 0x01010101u) << 4;
      hi[i] |= ((qh[i] >> (2 * j + 1)) & 0x01010101u) << 4;
    }
    return combine(lo, hi, p);
  }
};

}  // namespace qwen::cuda
