// Device-side dequantization of GGUF weight rows, in "chunks" of 32 consecutive elements.
//
// Every supported type is decoded through one entry point, dequant_chunk<T>(row, c, out): the
// 32 elements [32c, 32c + 32) of a row, in fp32. Legacy quants have one chunk per 32-element
// block; k-quants have 8 chunks per 256-element super-block; F32/F16/BF16 are "blocks" of 32
// elements so that the GEMV, embedding and dequant-to-fp16 kernels share one loop shape.
// Block layouts are ggml's (little-endian, packed, fp16 scales), restated next to each decoder.
// Loads use the widest access the block's alignment allows: GGUF rows start at 32-byte aligned
// offsets but a block's size is often only a multiple of 2 bytes (Q8_0: 34, Q6_K: 210); Q4_0,
// Q5_0 and Q8_0 read aligned words and shift them into place (load_d_words). The decoders are
// __host__ __device__ (QWEN_HD): tests/ops/test_quant_decode.cu runs them on the CPU.
#pragma once

#include <cstdint>

#include "backend/cuda/common.cuh"
#include "gguf/ggml_types.h"

namespace qwen::cuda {

constexpr int kChunk = 32;  // elements per chunk

QWEN_HD uint32_t load_u16(const uint8_t* p) {
  return *reinterpret_cast<const uint16_t*>(p);
}
// 4 bytes from a 2-byte aligned address.
QWEN_HD uint32_t load_u32_a2(const uint8_t* p) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  return uint32_t(h[0]) | (uint32_t(h[1]) << 16);
}
QWEN_HD uint32_t load_u32_a4(const uint8_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
QWEN_HD float load_half(const uint8_t* p) {
  return half_to_float(load_u16(p));
}

// Reads 16 bytes at a 2-byte aligned address into four words.
QWEN_HD void load16_a2(const uint8_t* p, uint32_t w[4]) {
  QWEN_UNROLL
  for (int i = 0; i < 4; ++i) w[i] = load_u32_a2(p + 4 * i);
}
QWEN_HD void load16_a4(const uint8_t* p, uint32_t w[4]) {
  QWEN_UNROLL
  for (int i = 0; i < 4; ++i) w[i] = load_u32_a4(p + 4 * i);
}
QWEN_HD void load16_a16(const uint8_t* p, uint32_t w[4]) {
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
}
// A block {u16 d; u8 payload[4N]} at a 2-byte aligned address: d and the payload as N words,
// read with N + 1 aligned 4-byte loads and funnel shifts instead of 2N + 1 two-byte loads. The
// last load is 2 bytes when the block ends in the middle of a word, so nothing past the block is
// read.
template <int N>
QWEN_HD void load_d_words(const uint8_t* b, uint32_t& d, uint32_t q[N]) {
  const uint32_t off = uint32_t(reinterpret_cast<uintptr_t>(b)) & 2u;  // 0 or 2
  const uint32_t* a = reinterpret_cast<const uint32_t*>(b - off);
  uint32_t w[N + 1];
  QWEN_UNROLL
  for (int i = 0; i < N; ++i) w[i] = a[i];
  w[N] = off ? a[N] : load_u16(reinterpret_cast<const uint8_t*>(a + N));
  d = (w[0] >> (8 * off)) & 0xffffu;
  QWEN_UNROLL
  for (int k = 0; k < N; ++k) q[k] = funnel_rc(w[k], w[k + 1], 16 + 8 * off);
}
QWEN_HD uint32_t byte_of(const uint32_t w[], int i) {
  return (w[i / 4] >> (8 * (i % 4))) & 0xffu;
}

// Byte i (0..11, run-time) of three words, by selects: indexing an array with a run-time value
// would put it in local memory.
QWEN_HD uint32_t byte_of3(const uint32_t s[3], int i) {
  const uint32_t w = i < 4 ? s[0] : (i < 8 ? s[1] : s[2]);
  return (w >> (8 * (i & 3))) & 0xffu;
}

// Small non-negative integers to float without I2F, which issues at a quarter of the FP32 rate
// and bounded the 4-bit GEMVs: the bits 0x4B000000 | q are the float 2^23 + q (q < 2^23), so
// int_float(q) - 2^23 - k is exactly float(q - k), one OR (or byte permute) and one FADD. Every
// decoder below gives the same values as float(int(q) - k), so results do not change.
constexpr float kMagic = 8388608.f;  // 2^23
QWEN_HD float int_float(uint32_t q) {
  return bits_float(0x4B000000u | q);
}
// Byte b of w as int_float(byte): one PRMT placing it under the exponent byte 0x4B.
QWEN_HD float byte_float(uint32_t w, int b) {
  return bits_float(byte_perm(w, 0x4B000000u, 0x7440u | uint32_t(b)));
}

// Block geometry per type: elements per block and bytes per block (mirrors the host type table).
template <GGMLType T>
struct BlockInfo;
template <>
struct BlockInfo<GGMLType::F32> {
  static constexpr int kElems = 32, kBytes = 128;
};
template <>
struct BlockInfo<GGMLType::F16> {
  static constexpr int kElems = 32, kBytes = 64;
};
template <>
struct BlockInfo<GGMLType::BF16> {
  static constexpr int kElems = 32, kBytes = 64;
};
template <>
struct BlockInfo<GGMLType::Q4_0> {
  static constexpr int kElems = 32, kBytes = 18;
};
template <>
struct BlockInfo<GGMLType::Q4_1> {
  static constexpr int kElems = 32, kBytes = 20;
};
template <>
struct BlockInfo<GGMLType::Q5_0> {
  static constexpr int kElems = 32, kBytes = 22;
};
template <>
struct BlockInfo<GGMLType::Q5_1> {
  static constexpr int kElems = 32, kBytes = 24;
};
template <>
struct BlockInfo<GGMLType::Q8_0> {
  static constexpr int kElems = 32, kBytes = 34;
};
template <>
struct BlockInfo<GGMLType::Q2_K> {
  static constexpr int kElems = 256, kBytes = 84;
};
template <>
struct BlockInfo<GGMLType::Q3_K> {
  static constexpr int kElems = 256, kBytes = 110;
};
template <>
struct BlockInfo<GGMLType::Q4_K> {
  static constexpr int kElems = 256, kBytes = 144;
};
template <>
struct BlockInfo<GGMLType::Q5_K> {
  static constexpr int kElems = 256, kBytes = 176;
};
template <>
struct BlockInfo<GGMLType::Q6_K> {
  static constexpr int kElems = 256, kBytes = 210;
};

// Decodes sub-chunk `sub` (0 for 32-element blocks, 0..7 for k-quants) of the block at `b`.
template <GGMLType T>
QWEN_HD void dequant_block_chunk(const uint8_t* b, int sub, float out[kChunk]);

// One chunk between its loads and its use: load() issues the loads, decode() yields the 32
// floats. A GEMV keeps the raw chunks of several rows in flight and decodes one at a time, so a
// compact type holds only its packed words (kWords registers: Q8_0 9, Q4_0 5, Q4_K 13 instead of
// 32). F32, which has no compact form, holds the floats.
template <GGMLType T>
struct ChunkRaw {
  static constexpr int kWords = kChunk;
  float v[kChunk];
  QWEN_HD void load(const uint8_t* b, int sub) { dequant_block_chunk<T>(b, sub, v); }
  QWEN_HD void decode(float out[kChunk]) const {
    QWEN_UNROLL
    for (int k = 0; k < kChunk; ++k) out[k] = v[k];
  }
};

// F32: 32 floats, 16-byte aligned.
template <>
QWEN_HD void dequant_block_chunk<GGMLType::F32>(const uint8_t* b, int, float out[kChunk]) {
  const float4* p = reinterpret_cast<const float4*>(b);
  QWEN_UNROLL
  for (int i = 0; i < 8; ++i) {
    const float4 v = p[i];
    out[4 * i] = v.x, out[4 * i + 1] = v.y, out[4 * i + 2] = v.z, out[4 * i + 3] = v.w;
  }
}

// F16 / BF16: 32 halves = four 16-byte loads; word k holds elements 2k (low half) and 2k + 1.
struct Raw16Bit {
  static constexpr int kWords = 16;
  uint32_t w[16];
  QWEN_HD void load(const uint8_t* b, int) {
    QWEN_UNROLL
    for (int i = 0; i < 4; ++i) load16_a16(b + 16 * i, w + 4 * i);
  }
};
template <>
struct ChunkRaw<GGMLType::F16> : Raw16Bit {
  QWEN_HD void decode(float out[kChunk]) const {
    QWEN_UNROLL
    for (int k = 0; k < 16; ++k) {
      out[2 * k] = half_to_float(uint16_t(w[k] & 0xffffu));
      out[2 * k + 1] = half_to_float(uint16_t(w[k] >> 16));
    }
  }
};
template <>
struct ChunkRaw<GGMLType::BF16> : Raw16Bit {
  QWEN_HD void decode(float out[kChunk]) const {
    QWEN_UNROLL
    for (int k = 0; k < 16; ++k) {
      out[2 * k] = bits_float(w[k] << 16);
      out[2 * k + 1] = bits_float(w[k] & 0xffff0000u);
    }
  }
};

// Q4_0 {half d; u8 qs[16]}: x[j] = (lo nibble of qs[j] - 8) d, x[j+16] = (hi nibble - 8) d.
template <>
struct ChunkRaw<GGMLType::Q4_0> {
  static constexpr int kWords = 5;
  uint32_t d, w[4];
  QWEN_HD void load(const uint8_t* b, int) { load_d_words<4>(b, d, w); }
  QWEN_HD void decode(float out[kChunk]) const {
    const float s = half_to_float(uint16_t(d));
    QWEN_UNROLL
    for (int i = 0; i < 4; ++i) {
      const uint32_t lo = w[i] & 0x0f0f0f0fu, hi = (w[i] >> 4) & 0x0f0f0f0fu;
      QWEN_UNROLL
      for (int b = 0; b < 4; ++b) {
        out[4 * i + b] = (byte_float(lo, b) - (kMagic + 8.f)) * s;
        out[4 * i + b + 16] = (byte_float(hi, b) - (kMagic + 8.f)) * s;
      }
    }
  }
};

// Q4_1 {half d; half m; u8 qs[16]}: x = q d + m, nibbles as Q4_0 (blocks 4-byte aligned).
template <>
struct ChunkRaw<GGMLType::Q4_1> {
  static constexpr int kWords = 5;
  uint32_t dm, w[4];
  QWEN_HD void load(const uint8_t* b, int) {
    dm = load_u32_a4(b);
    load16_a4(b + 4, w);
  }
  QWEN_HD void decode(float out[kChunk]) const {
    const float d = half_to_float(uint16_t(dm & 0xffffu)), m = half_to_float(uint16_t(dm >> 16));
    QWEN_UNROLL
    for (int i = 0; i < 4; ++i) {
      const uint32_t lo = w[i] & 0x0f0f0f0fu, hi = (w[i] >> 4) & 0x0f0f0f0fu;
      QWEN_UNROLL
      for (int b = 0; b < 4; ++b) {
        out[4 * i + b] = (byte_float(lo, b) - kMagic) * d + m;
        out[4 * i + b + 16] = (byte_float(hi, b) - kMagic) * d + m;
      }
    }
  }
};

// Q5_0 {half d; u8 qh[4]; u8 qs[16]}: 5th bit of element j is bit j of qh (as a u32).
template <>
struct ChunkRaw<GGMLType::Q5_0> {
  static constexpr int kWords = 6;
  uint32_t d, q[5];  // q[0]: qh, q[1..4]: qs
  QWEN_HD void load(const uint8_t* b, int) { load_d_words<5>(b, d, q); }
  QWEN_HD void decode(float out[kChunk]) const {
    const float s = half_to_float(uint16_t(d));
    const uint32_t qh = q[0];
    QWEN_UNROLL
    for (int j = 0; j < 16; ++j) {
      const uint32_t v = byte_of(q + 1, j);
      const uint32_t lo = (v & 0xf) | (((qh >> j) & 1u) << 4);
      const uint32_t hi = (v >> 4) | (((qh >> (j + 16)) & 1u) << 4);
      out[j] = (int_float(lo) - (kMagic + 16.f)) * s;
      out[j + 16] = (int_float(hi) - (kMagic + 16.f)) * s;
    }
  }
};

// Q5_1 {half d; half m; u8 qh[4]; u8 qs[16]}: x = q d + m (blocks 8-byte aligned).
template <>
struct ChunkRaw<GGMLType::Q5_1> {
  static constexpr int kWords = 6;
  uint32_t dm, qh, w[4];
  QWEN_HD void load(const uint8_t* b, int) {
    dm = load_u32_a4(b);
    qh = load_u32_a4(b + 4);
    load16_a4(b + 8, w);
  }
  QWEN_HD void decode(float out[kChunk]) const {
    const float d = half_to_float(uint16_t(dm & 0xffffu)), m = half_to_float(uint16_t(dm >> 16));
    QWEN_UNROLL
    for (int j = 0; j < 16; ++j) {
      const uint32_t q = byte_of(w, j);
      out[j] = (int_float((q & 0xf) | (((qh >> j) & 1u) << 4)) - kMagic) * d + m;
      out[j + 16] = (int_float((q >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - kMagic) * d + m;
    }
  }
};

// Q8_0 {half d; i8 qs[32]}: x = q d.
template <>
struct ChunkRaw<GGMLType::Q8_0> {
  static constexpr int kWords = 9;
  uint32_t d, w[8];
  QWEN_HD void load(const uint8_t* b, int) { load_d_words<8>(b, d, w); }
  QWEN_HD void decode(float out[kChunk]) const {
    const float s = half_to_float(uint16_t(d));
    // int8 q = (q ^ 0x80) - 128: the flipped byte is the non-negative integer.
    QWEN_UNROLL
    for (int i = 0; i < 8; ++i) {
      const uint32_t u = w[i] ^ 0x80808080u;
      QWEN_UNROLL
      for (int b = 0; b < 4; ++b) out[4 * i + b] = (byte_float(u, b) - (kMagic + 128.f)) * s;
    }
  }
};

// The compact types decode through their ChunkRaw (F32 specializes this directly).
template <GGMLType T>
QWEN_HD void dequant_block_chunk(const uint8_t* b, int sub, float out[kChunk]) {
  ChunkRaw<T> r;
  r.load(b, sub);
  r.decode(out);
}

// 4N bytes at a 2-byte aligned address p, kept as loaded: N + 1 aligned words (the last one read
// only when p is not 4-byte aligned, and then it ends 2 bytes past the range: callers keep that
// inside the block). word(k) is bytes [4k, 4k + 4) of the range; `sh` (8 * (p & 2)) is shared by
// ranges whose offsets from one block differ by multiples of 4.
template <int N>
struct WordsA2 {
  uint32_t a[N + 1];
  QWEN_HD void load(const uint8_t* p, uint32_t sh) {
    const uint32_t* base = reinterpret_cast<const uint32_t*>(p - sh / 8);
    QWEN_UNROLL
    for (int i = 0; i < N; ++i) a[i] = base[i];
    a[N] = sh ? base[N] : 0u;
  }
  QWEN_HD uint32_t word(int k, uint32_t sh) const { return funnel_r(a[k], a[k + 1], sh); }
};
QWEN_HD uint32_t misalign_shift(const uint8_t* p) {
  return 8u * (uint32_t(reinterpret_cast<uintptr_t>(p)) & 2u);
}

// The k-quants hold their raw words too (loads in flight, decoded one chunk at a time) and the
// chunk index `sub` (0..7) of the super-block.
// Q2_K {u8 scales[16]; u8 qs[64]; half d; half dmin} (84 bytes, 4-byte aligned). Chunk c: half
// h = c/4 of the super-block, 2-bit plane j = c%4; element k takes bits 2j..2j+1 of qs[32h + k],
// scale byte scales[8h + 2j + k/16] (low nibble: scale, high nibble: min). x = d sc q - dmin m.
template <>
struct ChunkRaw<GGMLType::Q2_K> {
  static constexpr int kWords = 11;
  uint32_t dm, sc, w[8];
  int sub;
  QWEN_HD void load(const uint8_t* b, int c) {
    const int h = c / 4, j = c % 4;
    sub = c;
    dm = load_u32_a4(b + 80);
    sc = load_u16(b + 8 * h + 2 * j);
    load16_a4(b + 16 + 32 * h, w);
    load16_a4(b + 16 + 32 * h + 16, w + 4);
  }
  QWEN_HD void decode(float out[kChunk]) const {
    const int j = sub % 4;
    const float d = half_to_float(uint16_t(dm & 0xffffu)), dmin = half_to_float(uint16_t(dm >> 16));
    const uint32_t s0 = sc & 0xffu, s1 = sc >> 8;
    const float dl0 = d * float(s0 & 0xf), ml0 = dmin * float(s0 >> 4);
    const float dl1 = d * float(s1 & 0xf), ml1 = dmin * float(s1 >> 4);
    QWEN_UNROLL
    for (int i = 0; i < 8; ++i) {
      const uint32_t q = (w[i] >> (2 * j)) & 0x03030303u;
      QWEN_UNROLL
      for (int b = 0; b < 4; ++b) {
        const float v = byte_float(q, b) - kMagic;
        out[4 * i + b] = i < 4 ? dl0 * v - ml0 : dl1 * v - ml1;
      }
    }
  }
};

// Q3_K {u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d} (110 bytes, 2-byte aligned). Chunk c:
// h = c/4, j = c%4; element k: low 2 bits = bits 2j.. of qs[32h + k], high bit = bit (4h + j)
// of hmask[k] (set means +0, clear means -4); 6-bit signed scale index i = 8h + 2j + k/16 packed
// as below, minus 32.
QWEN_HD int q3k_scale(const uint32_t s[3], int i) {
  const int low4 = int(i < 8 ? (byte_of3(s, i) & 0xf) : (byte_of3(s, i - 8) >> 4));
  const int high2 = int((byte_of3(s, 8 + (i % 4)) >> (2 * (i / 4))) & 3u);
  return (low4 | (high2 << 4)) - 32;
}
template <>
struct ChunkRaw<GGMLType::Q3_K> {
  static constexpr int kWords = 25;
  WordsA2<8> hm, qs;
  WordsA2<3> sc;
  uint32_t d, sh;
  int sub;
  QWEN_HD void load(const uint8_t* b, int c) {
    sub = c;
    sh = misalign_shift(b);
    hm.load(b, sh);
    qs.load(b + 32 + 32 * (c / 4), sh);
    sc.load(b + 96, sh);  // its extra word is d's (bytes 108..109) and stays inside the block
    d = load_u16(b + 108);
  }
  QWEN_HD void decode(float out[kChunk]) const {
    const int h = sub / 4, j = sub % 4, bit = 4 * h + j;
    uint32_t s[3];
    QWEN_UNROLL
    for (int k = 0; k < 3; ++k) s[k] = sc.word(k, sh);
    const float dd = half_to_float(uint16_t(d));
    const float dl0 = dd * float(q3k_scale(s, 8 * h + 2 * j)),
                dl1 = dd * float(q3k_scale(s, 8 * h + 2 * j + 1));
    QWEN_UNROLL
    for (int i = 0; i < 8; ++i) {
      // q + 4 = low 2 bits + 4 * high bit, in 0..7.
      const uint32_t q4 =
          ((qs.word(i, sh) >> (2 * j)) & 0x03030303u) | (((hm.word(i, sh) >> bit) & 0x01010101u) << 2);
      QWEN_UNROLL
      for (int b = 0; b < 4; ++b) out[4 * i + b] = (i < 4 ? dl0 : dl1) * (byte_float(q4, b) - (kMagic + 4.f));
    }
  }
};

// Scale and min j (0..7) of a Q4_K / Q5_K super-block, 6 bits each packed into 12 bytes.
QWEN_HD void k4_scale_min(const uint32_t s[3], int j, float& sc, float& m) {
  if (j < 4) {
    sc = float(byte_of3(s, j) & 63);
    m = float(byte_of3(s, j + 4) & 63);
  } else {
    sc = float((byte_of3(s, j + 4) & 0xf) | ((byte_of3(s, j - 4) >> 6) << 4));
    m = float((byte_of3(s, j + 4) >> 4) | ((byte_of3(s, j) >> 6) << 4));
  }
}

// Chunk c's x = dl q - ml of a Q4_K / Q5_K super-block (both begin {half d; half dmin; u8
// scales[12]}, 16-byte aligned blocks): dl = d * scale_c, ml = dmin * min_c.
struct K4Head {
  uint32_t dm, sc[3];
  int sub;
  QWEN_HD void load(const uint8_t* b, int c) {
    sub = c;
    const uint4 v = *reinterpret_cast<const uint4*>(b);
    dm = v.x, sc[0] = v.y, sc[1] = v.z, sc[2] = v.w;
  }
  QWEN_HD void scale(float& dl, float& ml) const {
    float sc_f, m_f;
    k4_scale_min(sc, sub, sc_f, m_f);
    dl = half_to_float(uint16_t(dm & 0xffffu)) * sc_f;
    ml = half_to_float(uint16_t(dm >> 16)) * m_f;
  }
};

// Q4_K {half d; half dmin; u8 scales[12]; u8 qs[128]} (144 bytes). Chunk c: nibble (c%2 ? high :
// low) of qs[32 (c/2) + k]; x = d sc_c q - dmin m_c.
template <>
struct ChunkRaw<GGMLType::Q4_K> : K4Head {
  static constexpr int kWords = 13;
  uint32_t w[8];
  QWEN_HD void load(const uint8_t* b, int c) {
    K4Head::load(b, c);
    load16_a16(b + 16 + 32 * (c / 2), w);
    load16_a16(b + 16 + 32 * (c / 2) + 16, w + 4);
  }
  QWEN_HD void decode(float out[kChunk]) const {
    float dl, ml;
    scale(dl, ml);
    const int shift = 4 * (sub % 2);
    QWEN_UNROLL
    for (int i = 0; i < 8; ++i) {
      const uint32_t q = (w[i] >> shift) & 0x0f0f0f0fu;
      QWEN_UNROLL
      for (int b = 0; b < 4; ++b) out[4 * i + b] = dl * (byte_float(q, b) - kMagic) - ml;
    }
  }
};

// Q5_K {half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]} (176 bytes). As Q4_K plus a
// 5th bit: bit c of qh[k].
template <>
struct ChunkRaw<GGMLType::Q5_K> : K4Head {
  static constexpr int kWords = 21;
  uint32_t qh[8], w[8];
  QWEN_HD void load(const uint8_t* b, int c) {
    K4Head::load(b, c);
    load16_a16(b + 16, qh);
    load16_a16(b + 32, qh + 4);
    load16_a16(b + 48 + 32 * (c / 2), w);
    load16_a16(b + 48 + 32 * (c / 2) + 16, w + 4);
  }
  QWEN_HD void decode(float out[kChunk]) const {
    float dl, ml;
    scale(dl, ml);
    const int shift = 4 * (sub % 2);
    QWEN_UNROLL
    for (int i = 0; i < 8; ++i) {
      const uint32_t q = ((w[i] >> shift) & 0x0f0f0f0fu) | (((qh[i] >> sub) & 0x01010101u) << 4);
      QWEN_UNROLL
      for (int b = 0; b < 4; ++b) out[4 * i + b] = dl * (byte_float(q, b) - kMagic) - ml;
    }
  }
};

// Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; half d} (210 bytes, 2-byte aligned). Chunk c:
// h = c/4, g = c%4; element k: low 4 bits = nibble (g < 2 ? low : high) of ql[64h + 32 (g%2) + k],
// high 2 bits = bits 2g.. of qh[32h + k]; q - 32 scaled by d * scales[8h + 2g + k/16].
template <>
struct ChunkRaw<GGMLType::Q6_K> {
  static constexpr int kWords = 22;
  WordsA2<8> ql, qh;
  uint32_t sc, d, sh;
  int sub;
  QWEN_HD void load(const uint8_t* b, int c) {
    const int h = c / 4, g = c % 4;
    sub = c;
    sh = misalign_shift(b);
    ql.load(b + 64 * h + 32 * (g % 2), sh);
    qh.load(b + 128 + 32 * h, sh);
    sc = load_u16(b + 192 + 8 * h + 2 * g);
    d = load_u16(b + 208);
  }
  QWEN_HD void decode(float out[kChunk]) const {
    const int g = sub % 4, lshift = g < 2 ? 0 : 4;
    const float dd = half_to_float(uint16_t(d));
    const float d0 = dd * float(int8_t(sc & 0xffu)), d1 = dd * float(int8_t(sc >> 8));
    QWEN_UNROLL
    for (int i = 0; i < 8; ++i) {
      const uint32_t q =
          ((ql.word(i, sh) >> lshift) & 0x0f0f0f0fu) | (((qh.word(i, sh) >> (2 * g)) & 0x03030303u) << 4);
      QWEN_UNROLL
      for (int b = 0; b < 4; ++b) out[4 * i + b] = (i < 4 ? d0 : d1) * (byte_float(q, b) - (kMagic + 32.f));
    }
  }
};

// Loads the chunk of elements [32c, 32c + 32) of a row that starts at `row`.
template <GGMLType T>
QWEN_HD void load_chunk(ChunkRaw<T>& r, const uint8_t* row, int64_t c) {
  constexpr int kPerBlock = BlockInfo<T>::kElems / kChunk;
  r.load(row + (c / kPerBlock) * BlockInfo<T>::kBytes, int(c % kPerBlock));
}
// The 32 elements [32c, 32c + 32) of a row that starts at `row`.
template <GGMLType T>
QWEN_HD void dequant_chunk(const uint8_t* row, int64_t c, float out[kChunk]) {
  ChunkRaw<T> r;
  load_chunk(r, row, c);
  r.decode(out);
}

// Calls f.template operator()<T>() with T the compile-time twin of the run-time type `t`; throws
// (naming the type and the op) for a type the CUDA kernels do not decode.
template <class F>
void dispatch_type(GGMLType t, const char* op, F&& f) {
  switch (t) {
    case GGMLType::F32:
      f.template operator()<GGMLType::F32>();
      return;
    case GGMLType::F16:
      f.template operator()<GGMLType::F16>();
      return;
    case GGMLType::BF16:
      f.template operator()<GGMLType::BF16>();
      return;
    case GGMLType::Q4_0:
      f.template operator()<GGMLType::Q4_0>();
      return;
    case GGMLType::Q4_1:
      f.template operator()<GGMLType::Q4_1>();
      return;
    case GGMLType::Q5_0:
      f.template operator()<GGMLType::Q5_0>();
      return;
    case GGMLType::Q5_1:
      f.template operator()<GGMLType::Q5_1>();
      return;
    case GGMLType::Q8_0:
      f.template operator()<GGMLType::Q8_0>();
      return;
    case GGMLType::Q2_K:
      f.template operator()<GGMLType::Q2_K>();
      return;
    case GGMLType::Q3_K:
      f.template operator()<GGMLType::Q3_K>();
      return;
    case GGMLType::Q4_K:
      f.template operator()<GGMLType::Q4_K>();
      return;
    case GGMLType::Q5_K:
      f.template operator()<GGMLType::Q5_K>();
      return;
    case GGMLType::Q6_K:
      f.template operator()<GGMLType::Q6_K>();
      return;
    default:
      QWEN_FAIL("cuda ", op, ": weight type ", type_name(t), " is not supported by the CUDA backend");
  }
}

}  // namespace qwen::cuda
