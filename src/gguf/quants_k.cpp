// Row kernels for the 256-element "K" quant formats (super-blocks of 8 or 16 sub-blocks, each
// with its own quantized scale).
//
// Dequantization matches ggml and gguf.quants.dequantize bit for bit: the sub-block scale is
// formed first (d * sc, dmin * m), then each value as dl * q - ml, never fused into an FMA.
#include "gguf/quants_impl.h"
#include "util/half.h"

#ifdef __clang__
#pragma clang fp contract(off)  // GCC in ISO C++ mode does not contract by default
#endif

namespace qwen::quants {

namespace {

// block_q2_K (84 bytes): u8 scales[16] (low nibble scale, high nibble min, per 16 elements);
// u8 qs[64] (2-bit); fp16 d; fp16 dmin.
// Element h*128 + s*32 + l (h < 2, s < 4, l < 32) is (qs[h*32 + l] >> 2s) & 3, in group idx/16.
void dq_q2_k(const uint8_t* __restrict b, float* __restrict y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = fp16_to_f32(load_u16(b + 80));
  const float dmin = fp16_to_f32(load_u16(b + 82));
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int half = 0; half < 2; ++half) {
        const int g = h * 8 + s * 2 + half;
        const float dl = d * float(scales[g] & 0xF);
        const float ml = dmin * float(scales[g] >> 4);
        const uint8_t* q = qs + h * 32 + half * 16;
        for (int l = 0; l < 16; ++l) y[g * 16 + l] = dl * float((q[l] >> (2 * s)) & 3) - ml;
      }
}

// block_q3_K (110 bytes): u8 hmask[32]; u8 qs[64] (low 2 bits); u8 scales[12] (16 x 6-bit);
// fp16 d. Element h*128 + s*32 + l has low bits (qs[h*32 + l] >> 2s) & 3 and high bit
// (hmask[l] >> (4h + s)) & 1; a clear high bit means "subtract 4". Scale k (per 16 elements) has
// low nibble from byte k (k < 8) or the high nibble of byte k - 8, and its top two bits from
// byte 8 + k % 4 at bit 2 * (k / 4); it is stored biased by 32.
void dq_q3_k(const uint8_t* __restrict b, float* __restrict y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = fp16_to_f32(load_u16(b + 108));
  float dl[16];
  for (int k = 0; k < 16; ++k) {
    const int lo = k < 8 ? (sc[k] & 0xF) : (sc[k - 8] >> 4);
    const int hi = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
    dl[k] = d * float((lo | (hi << 4)) - 32);
  }
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int half = 0; half < 2; ++half) {  // 16 elements sharing scale h*8 + s*2 + half
        const int g = h * 8 + s * 2 + half;
        const uint8_t* q = qs + h * 32 + half * 16;
        const uint8_t* hm = hmask + half * 16;
        for (int l = 0; l < 16; ++l) {
          const int low = (q[l] >> (2 * s)) & 3;
          const int high = (hm[l] >> (4 * h + s)) & 1;
          y[g * 16 + l] = dl[g] * float(low - 4 + 4 * high);
        }
      }
}

// The 12 scale bytes of Q4_K / Q5_K: 8 six-bit scales and 8 six-bit mins.
//   bytes 0-3: scale j (low 6 bits) | top 2 bits of scale j+4
//   bytes 4-7: min j   (low 6 bits) | top 2 bits of min j+4
//   bytes 8-11: low nibble = low 4 bits of scale j+4, high nibble = low 4 bits of min j+4
void scale_min_k4(const uint8_t* s, float d, float dmin, float* dl, float* ml) {
  for (int j = 0; j < 4; ++j) {
    dl[j] = d * float(s[j] & 63);
    ml[j] = dmin * float(s[j + 4] & 63);
    dl[j + 4] = d * float((s[j + 8] & 0xF) | ((s[j] >> 6) << 4));
    ml[j + 4] = dmin * float((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}

// block_q4_K (144 bytes): fp16 d; fp16 dmin; u8 scales[12]; u8 qs[128].
// Element c*64 + k*32 + l (c < 4, k < 2) is (qs[c*32 + l] >> 4k) & 0xF in sub-block 2c + k.
void dq_q4_k(const uint8_t* __restrict b, float* __restrict y) {
  float dl[8], ml[8];
  scale_min_k4(b + 4, fp16_to_f32(load_u16(b)), fp16_to_f32(load_u16(b + 2)), dl, ml);
  const uint8_t* qs = b + 16;
  for (int c = 0; c < 4; ++c)
    for (int k = 0; k < 2; ++k) {
      const int g = 2 * c + k;
      for (int l = 0; l < 32; ++l) y[g * 32 + l] = dl[g] * float((qs[c * 32 + l] >> (4 * k)) & 0xF) - ml[g];
    }
}

// block_q5_K (176 bytes): fp16 d; fp16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128].
// As Q4_K, plus a fifth bit (qh[l] >> g) & 1 for element g*32 + l.
void dq_q5_k(const uint8_t* __restrict b, float* __restrict y) {
  float dl[8], ml[8];
  scale_min_k4(b + 4, fp16_to_f32(load_u16(b)), fp16_to_f32(load_u16(b + 2)), dl, ml);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int c = 0; c < 4; ++c)
    for (int k = 0; k < 2; ++k) {
      const int g = 2 * c + k;
      for (int l = 0; l < 32; ++l) {
        const int q = ((qs[c * 32 + l] >> (4 * k)) & 0xF) | (((qh[l] >> g) & 1) << 4);
        y[g * 32 + l] = dl[g] * float(q) - ml[g];
      }
    }
}

// block_q6_K (210 bytes): u8 ql[128] (low 4 bits); u8 qh[64] (high 2 bits); i8 scales[16]; fp16 d.
// Element h*128 + r*32 + l (h < 2, r < 4, l < 32): low nibble (ql[h*64 + (r%2)*32 + l] >> 4*(r/2)),
// high bits (qh[h*32 + l] >> 2r) & 3; value biased by 32; scale per 16 elements.
void dq_q6_k(const uint8_t* __restrict b, float* __restrict y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = fp16_to_f32(load_u16(b + 208));
  float dl[16];
  for (int k = 0; k < 16; ++k) dl[k] = d * float(sc[k]);
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 4; ++r)
      for (int half = 0; half < 2; ++half) {  // 16 elements sharing scale h*8 + r*2 + half
        const int g = h * 8 + r * 2 + half;
        const uint8_t* lo4 = ql + h * 64 + (r % 2) * 32 + half * 16;
        const uint8_t* hi2 = qh + h * 32 + half * 16;
        for (int l = 0; l < 16; ++l) {
          const int lo = (lo4[l] >> (4 * (r / 2))) & 0xF;
          const int hi = (hi2[l] >> (2 * r)) & 3;
          y[g * 16 + l] = dl[g] * float((lo | (hi << 4)) - 32);
        }
      }
}

}  // namespace

RowKernels k_kernels(GGMLType t) {
  switch (t) {
    case GGMLType::Q2_K:
      return block_kernels<256, 84, dq_q2_k>();
    case GGMLType::Q3_K:
      return block_kernels<256, 110, dq_q3_k>();
    case GGMLType::Q4_K:
      return block_kernels<256, 144, dq_q4_k>();
    case GGMLType::Q5_K:
      return block_kernels<256, 176, dq_q5_k>();
    case GGMLType::Q6_K:
      return block_kernels<256, 210, dq_q6_k>();
    default:
      return {};
  }
}

}  // namespace qwen::quants
