// Quantized weights' integers straight into tensor-core fragments: gemm_small's fast path for
// Q6_K, Q8_0 and Q4_0 weights at up to 16 tokens (gemm_small.cu), with no dequantization to fp16
// and no shared-memory tile of weights.
//
// A 64-column slice of a row is multiplied by x one sub-block at a time (Q6_K: four of 16,
// w = d sc (q - 32); Q8_0 and Q4_0: two blocks of 32, w = d q and d (q - 8)): A holds the integers
// (Q6_K -32..31, Q8_0 -128..127, Q4_0 -8..7, exact in fp16), B the fp16 x, and per sub-block the
// fp32 sums T = sum(q x) become d sc T per row and token. So a weight costs one or two
// instructions (masks, shifts and an fp16 subtraction per two), where dequantizing it to fp16 cost
// about eight, and it is never rounded: only x is (to fp16, as in the other fast paths).
//
// Layout. A thread (g, q) = (lane / 4, lane % 4) of the m16n8k16 A fragment holds rows g and
// g + 8, columns {2q, 2q + 1} (a0, a1) and {2q + 8, 2q + 9} (a2, a3) of each 16-column step. For
// each step it takes one 32-bit word of 4 quant bytes per row: the quants of bytes (0, 2) of the
// word form a0/a1, those of bytes (1, 3) a2/a3 (a mask of both after a shift). The columns of the
// slice are therefore a permutation of its elements (x_col()), which x follows when it is staged:
// a dot product does not depend on the order of its terms within a sub-block. All of it is
// __host__ __device__: tests/ops/test_quant_mma.cu rebuilds the tiles from the fragments of all 32
// lanes on the CPU.
#pragma once

#include <cstdint>

#include "backend/cuda/quant.cuh"

namespace qwen::cuda {

// The fp16 bits of a small integer v (0..2047), exact.
QWEN_HD uint32_t small_int_half_bits(uint32_t v) {
  if (v == 0) return 0;
  int e = 0;
  while ((v >> (e + 1)) != 0) ++e;
  return uint32_t(e + 15) << 10 | ((v << (10 - e)) & 0x3ffu);
}

// Two fp16 integers: the values v < 1024 at bits [0, 10) and [16, 26) of u, minus bias (v - bias
// is exact: 0x6400 | v is the fp16 1024 + v).
QWEN_HD uint32_t int_pair_half2(uint32_t u, uint32_t bias) {
#ifdef __CUDA_ARCH__
  const uint32_t v = u | 0x64006400u, k = 0x64006400u + bias * 0x00010001u;
  const __half2 r = __hsub2(*reinterpret_cast<const __half2*>(&v), *reinterpret_cast<const __half2*>(&k));
  return *reinterpret_cast<const uint32_t*>(&r);
#else
  const auto one = [&](uint32_t x) {
    const int d = int(x) - int(bias);
    const uint32_t m = small_int_half_bits(uint32_t(d < 0 ? -d : d));
    return d < 0 ? m | 0x8000u : m;
  };
  return one(u & 0x3ffu) | one((u >> 16) & 0x3ffu) << 16;
#endif
}

// The column of element p of a slice when a thread takes the bytes 4q .. 4q + 3 (4q + r) of a
// 16-element step: 2q + r / 2 (r even: a0/a1) or 2q + 8 + r / 2 (r odd: a2/a3). Elements p and
// p + 2 (p % 4 == 0) share one 32-bit column pair, as do p + 1 and p + 3, 8 columns on.
QWEN_HD int step_col(int q, int r) {
  return 8 * (r % 2) + 2 * q + r / 2;
}

// The raw words of slice s that thread (g, q) of a 16-row tile holds, for rows g (r = 0) and
// g + 8 (r = 1) of n_blocks 32-element blocks (Q8_0, Q4_0: the last slice may hold one): kSubs
// sub-blocks of kSteps 16-column steps each; frag(sb, kk, a) gives the A fragment of step kk of
// sub-block sb, scales() d sc per sub-block and row, x_col(p) the tile column of slice element p.
template <GGMLType T>
struct IntSlice;

// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; half d} (210 bytes, 2-byte aligned): slice s is
// elements [64 (s % 4), + 64) of super-block s / 4, i.e. half hh = (s % 4) / 2 and nibble t = s % 2
// of ql bytes 64hh + p (element p of the slice), with bits 4t + 2 (p / 32) of qh byte 32hh + p %
// 32 on top, scaled by scales[8hh + 4t + p / 16]. Step kk is sub-block kk; thread q takes bytes
// 4q .. 4q + 3 of it: element p = 16kk + 4q + r. Its words are 2-byte aligned (two 2-byte loads
// each).
template <>
struct IntSlice<GGMLType::Q6_K> {
  static constexpr int kWords = 18, kSubs = 4, kSteps = 1;
  static constexpr int kBytes = 210;
  uint32_t ql[2][4], qh[2][2], sc[2], d[2];
  int t;
  QWEN_HD static int x_col(int p) { return 16 * (p / 16) + step_col((p % 16) / 4, p % 4); }
  QWEN_HD void load(const uint8_t* row_g, const uint8_t* row_g8, int64_t s, int q, int64_t) {
    const int64_t off = (s / 4) * kBytes;
    const int hh = int(s % 4) / 2;
    t = int(s % 2);
    const uint8_t* rows[2] = {row_g + off, row_g8 + off};
    QWEN_UNROLL
    for (int r = 0; r < 2; ++r) {
      QWEN_UNROLL
      for (int kk = 0; kk < 4; ++kk) ql[r][kk] = load_u32_a2(rows[r] + 64 * hh + 16 * kk + 4 * q);
      QWEN_UNROLL
      for (int k = 0; k < 2; ++k) qh[r][k] = load_u32_a2(rows[r] + 128 + 32 * hh + 16 * k + 4 * q);
      sc[r] = load_u32_a2(rows[r] + 192 + 8 * hh + 4 * t);
      d[r] = load_u16(rows[r] + 208);
    }
  }
  QWEN_HD void frag(int sb, int, uint32_t a[4]) const {
    const int lsh = 4 * t, hsh = 4 * t + 2 * (sb / 2);
    QWEN_UNROLL
    for (int r = 0; r < 2; ++r) {
      const uint32_t l = ql[r][sb], h = qh[r][sb % 2];
      a[r] = int_pair_half2(((l >> lsh) & 0x000f000fu) | (((h >> hsh) & 0x00030003u) << 4), 32);
      a[2 + r] =
          int_pair_half2(((l >> (lsh + 8)) & 0x000f000fu) | (((h >> (hsh + 8)) & 0x00030003u) << 4), 32);
    }
  }
  QWEN_HD void scales(float fs[kSubs][2]) const {
    QWEN_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float dr = half_to_float(uint16_t(d[r]));
      QWEN_UNROLL
      for (int sb = 0; sb < kSubs; ++sb) fs[sb][r] = dr * float(int8_t(sc[r] >> (8 * sb)));
    }
  }
};

// Q8_0 {half d; i8 qs[32]} (34 bytes) and Q4_0 {half d; u8 qs[16]} (18 bytes, element k < 16 the
// low nibble of qs[k], k >= 16 the high nibble of qs[k - 16]), both 2-byte aligned: slice s is
// blocks 2s and 2s + 1 (sub-blocks of 32, w = d q, Q4_0 q - 8), two steps each; thread q takes
// bytes 4q .. 4q + 3 of each step (Q8_0: quant bytes 16kk + 4q; Q4_0: bytes 4q, nibble kk), so
// element p = 32 sb + 16kk + 4q + r. Q8_0's signed bytes enter as unsigned (xor 0x80) minus 128.
template <GGMLType T>
struct LegacyIntSlice {
  static constexpr bool kQ8 = T == GGMLType::Q8_0;
  static constexpr int kWordsPerBlock = kQ8 ? 2 : 1;
  static constexpr int kWords = 2 * 2 * (1 + kWordsPerBlock), kSubs = 2, kSteps = 2;
  static constexpr int kBytes = kQ8 ? 34 : 18;
  uint32_t d[2][2], w[2][2][kWordsPerBlock];  // [row][block]
  QWEN_HD static int x_col(int p) {
    const int l = p % 32;
    return 32 * (p / 32) + 16 * (l / 16) + step_col((l % 16) / 4, l % 4);
  }
  QWEN_HD void load(const uint8_t* row_g, const uint8_t* row_g8, int64_t s, int q, int64_t n_blocks) {
    const uint8_t* rows[2] = {row_g, row_g8};
    QWEN_UNROLL
    for (int r = 0; r < 2; ++r) {
      QWEN_UNROLL
      for (int b = 0; b < 2; ++b) {
        const uint8_t* blk = rows[r] + (2 * s + b) * kBytes;
        if (2 * s + b >= n_blocks) {  // past the row's end: d = 0, quants 0
          d[r][b] = 0;
          QWEN_UNROLL
          for (int k = 0; k < kWordsPerBlock; ++k) w[r][b][k] = kQ8 ? 0u : 0x88888888u;
          continue;
        }
        d[r][b] = load_u16(blk);
        QWEN_UNROLL
        for (int k = 0; k < kWordsPerBlock; ++k) w[r][b][k] = load_u32_a2(blk + 2 + 16 * k + 4 * q);
      }
    }
  }
  QWEN_HD void frag(int sb, int kk, uint32_t a[4]) const {
    QWEN_UNROLL
    for (int r = 0; r < 2; ++r) {
      if constexpr (kQ8) {
        const uint32_t u = w[r][sb][kk] ^ 0x80808080u;
        a[r] = int_pair_half2(u & 0x00ff00ffu, 128);
        a[2 + r] = int_pair_half2((u >> 8) & 0x00ff00ffu, 128);
      } else {
        const uint32_t u = w[r][sb][0] >> (4 * kk);
        a[r] = int_pair_half2(u & 0x000f000fu, 8);
        a[2 + r] = int_pair_half2((u >> 8) & 0x000f000fu, 8);
      }
    }
  }
  QWEN_HD void scales(float fs[kSubs][2]) const {
    QWEN_UNROLL
    for (int r = 0; r < 2; ++r) {
      QWEN_UNROLL
      for (int b = 0; b < kSubs; ++b) fs[b][r] = half_to_float(uint16_t(d[r][b]));
    }
  }
};
template <>
struct IntSlice<GGMLType::Q8_0> : LegacyIntSlice<GGMLType::Q8_0> {};
template <>
struct IntSlice<GGMLType::Q4_0> : LegacyIntSlice<GGMLType::Q4_0> {};

// Types with an IntSlice.
constexpr bool has_int_slice(GGMLType t) {
  return t == GGMLType::Q6_K || t == GGMLType::Q8_0 || t == GGMLType::Q4_0;
}

}  // namespace qwen::cuda
