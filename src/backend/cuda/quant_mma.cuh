// Q4_K quants straight into tensor-core fragments: gemm_small's fast path for Q4_K weights
// (gemm_small.cu), with no dequantization to fp16 and no shared-memory tile of weights.
//
// A 64-column slice of a Q4_K row is one sub-block pair j of a super-block (w = d sc q - dmin m
// per 32-element sub-block; elements 64j + l and 64j + 32 + l are the low and high nibbles of
// quant byte 32j + l). The 16 rows of an mma tile are multiplied by x one sub-block at a time:
// A holds the integers q (0..15, exact in fp16), B the fp16 x, and per sub-block the fp32 sums
// T = sum(q x) become d sc T - dmin m I with I = sum(x) over the sub-block, per row and token.
// So a weight costs about one instruction (a mask and or, and a subtraction per two), where
// dequantizing it to fp16 cost about eight, and it is never rounded: only x is (to fp16, as in
// the other fast paths).
//
// Layout. A thread (g, q) = (lane / 4, lane % 4) of the m16n8k16 A fragment holds rows g and
// g + 8, columns {2q, 2q + 1} (a0, a1) and {2q + 8, 2q + 9} (a2, a3) of each 16-column step. It
// loads the 8 quant bytes [8q, 8q + 8) of the pair for each of its rows (one 8-byte load) and
// takes k16 step kk from their word kk: the nibbles of bytes (0, 2) of the word form a0/a1,
// those of bytes (1, 3) a2/a3 (a mask of bits 0-3 and 16-19 after a shift of 0, 8 (low nibbles),
// 4 or 12 (high)). The columns of the slice are therefore a permutation of its elements
// (x_col()), which x follows when it is staged: a dot product does not depend on the order of
// its terms within a sub-block. All of it is __host__ __device__: tests/ops/test_quant_mma.cu
// rebuilds the tiles from the fragments of all 32 lanes on the CPU.
#pragma once

#include <cstdint>

#include "backend/cuda/quant.cuh"
#include "backend/cuda/quant_dot.cuh"

namespace qwen::cuda {

// The fp16 bits of a small integer v (0..15), exact.
QWEN_HD uint32_t small_int_half_bits(uint32_t v) {
  if (v == 0) return 0;
  const int e = v >= 8 ? 3 : (v >= 4 ? 2 : (v >= 2 ? 1 : 0));
  return uint32_t(e + 15) << 10 | ((v << (10 - e)) & 0x3ffu);
}

// Two fp16 integers: the nibbles at bits [sh, sh + 4) and [16 + sh, 20 + sh) of w. (0x6400 | v
// is the fp16 1024 + v; subtracting 1024 leaves v exactly.)
QWEN_HD uint32_t nibble_pair_half2(uint32_t w, int sh) {
#ifdef __CUDA_ARCH__
  const uint32_t v = ((w >> sh) & 0x000f000fu) | 0x64006400u, k = 0x64006400u;
  const __half2 r = __hsub2(*reinterpret_cast<const __half2*>(&v), *reinterpret_cast<const __half2*>(&k));
  return *reinterpret_cast<const uint32_t*>(&r);
#else
  return small_int_half_bits((w >> sh) & 0xfu) | small_int_half_bits((w >> (16 + sh)) & 0xfu) << 16;
#endif
}

// The tile column of element p (0..63) of a slice: sub-block h = p / 32, its byte l = p % 32 =
// 8 q + 4 kk + r sits in step kk of sub-block h, column 2q + r / 2 (r even: a0/a1) or 2q + 8 +
// r / 2 (r odd: a2/a3). Elements p and p + 2 (p % 4 == 0) share one 32-bit column pair, as do
// p + 1 and p + 3, 8 columns on.
QWEN_HD int x_col(int p) {
  const int h = p / 32, l = p % 32, q = l / 8, kk = (l / 4) % 2, r = l % 4;
  return 32 * h + 16 * kk + 8 * (r % 2) + 2 * q + r / 2;
}

constexpr int kQ4KBytes = 144;  // {half d; half dmin; u8 scales[12]; u8 qs[128]}

// The raw words of slice s (sub-block pair j = s % 4 of super-block s / 4) that thread (g, q)
// of a 16-row tile holds: for rows g (r = 0) and g + 8 (r = 1), the super-block's 16-byte head
// (d, dmin, scales) and the quant bytes [8q, 8q + 8) of the pair. Every load is aligned: rows
// and super-blocks are multiples of 16 bytes.
struct Q4KSlice {
  static constexpr int kWords = 12;
  uint4 head[2];
  uint2 qs[2];
  int j;
  QWEN_HD void load(const uint8_t* row_g, const uint8_t* row_g8, int64_t s, int q) {
    const int64_t off = (s / 4) * kQ4KBytes;
    j = int(s % 4);
    const int64_t qoff = off + 16 + 32 * j + 8 * q;
    head[0] = *reinterpret_cast<const uint4*>(row_g + off);
    head[1] = *reinterpret_cast<const uint4*>(row_g8 + off);
    qs[0] = *reinterpret_cast<const uint2*>(row_g + qoff);
    qs[1] = *reinterpret_cast<const uint2*>(row_g8 + qoff);
  }
  // The A fragment of sub-block 2j + h, k16 step kk: the quants as fp16 integers.
  QWEN_HD void frag(int h, int kk, uint32_t a[4]) const {
    const uint32_t w0 = kk ? qs[0].y : qs[0].x, w1 = kk ? qs[1].y : qs[1].x;
    const int sh = 4 * h;
    a[0] = nibble_pair_half2(w0, sh);
    a[1] = nibble_pair_half2(w1, sh);
    a[2] = nibble_pair_half2(w0, sh + 8);
    a[3] = nibble_pair_half2(w1, sh + 8);
  }
  // d sc (fs) and dmin m (fm) of sub-block 2j + h of row r.
  QWEN_HD void scales(float fs[2][2], float fm[2][2]) const {
    QWEN_UNROLL
    for (int r = 0; r < 2; ++r) {
      const uint32_t sc[3] = {head[r].y, head[r].z, head[r].w};
      uint32_t s2, m2;
      k4_pair_scale_min(sc, j, s2, m2);
      const float d = half_to_float(uint16_t(head[r].x & 0xffffu)), dmin = half_to_float(uint16_t(head[r].x >> 16));
      QWEN_UNROLL
      for (int h = 0; h < 2; ++h) {
        fs[h][r] = d * float((s2 >> (8 * h)) & 0xffu);
        fm[h][r] = dmin * float((m2 >> (8 * h)) & 0xffu);
      }
    }
  }
};

}  // namespace qwen::cuda
