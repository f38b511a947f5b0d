// fp32 -> ggml block formats. Layouts are those the dequantizers in quants.cpp / quants_k.cpp
// document; each quantizer below writes exactly the fields they read.
//
// With ScaleSearch::Nearest the 32-element formats follow ggml's reference quantizers operation by
// operation (the same fp32 divisions, truncations and fp16 rounding, never fused into an FMA), so
// their bytes equal gguf.quants.quantize; with Search they keep the layout but fit the scale. The K
// formats quantize each sub-block to a (scale[, offset]) pair, then the sub-block scales to 4, 6 or
// 8 bits against one fp16 super-block scale, then every value again against the scale it will
// actually be decoded with.
#include "gguf/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/check.h"
#include "util/half.h"

#ifdef __clang__
#pragma clang fp contract(off)  // GCC in ISO C++ mode does not contract by default
#endif

namespace qwen {

namespace {

void store_u16(uint8_t* p, uint16_t v) {
  std::memcpy(p, &v, 2);
}
void store_u32(uint8_t* p, uint32_t v) {
  std::memcpy(p, &v, 4);
}

// Index of the element of largest magnitude; the first on ties (as ggml's loop and numpy's argmax).
int argmax_abs(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(x[best])) best = i;
  return best;
}

int nearest(float v) {
  return int(std::nearbyint(v));
}

// ---- 32-element formats: ggml's reference quantizers ----

// y = d * q, q = round(x / d) half away from zero, d = amax / 127.
void q8_0_block(const float* x, uint8_t* b) {
  float amax = 0.f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.f ? 1.0f / d : 0.0f;
  store_u16(b, f32_to_fp16(d));
  for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(std::round(x[j] * id)));
}

// The element of largest magnitude maps to -2^(bits-1) exactly (d = max / -half); others to
// trunc(x / d + half + 0.5), clamped to the top of the range.
template <int kHalf>
void symmetric_legacy(const float* x, float* d_out, uint8_t* q) {
  const float max = x[argmax_abs(x, 32)];
  const float d = max / -kHalf;
  const float id = d != 0.f ? 1.0f / d : 0.0f;
  for (int j = 0; j < 32; ++j) q[j] = uint8_t(std::min(2 * kHalf - 1, int(x[j] * id + (kHalf + 0.5f))));
  *d_out = d;
}

// q = trunc((x - min) / d + 0.5) with d = (max - min) / levels.
template <int kLevels>
void affine_legacy(const float* x, float* d_out, float* m_out, uint8_t* q) {
  float min = x[0], max = x[0];
  for (int j = 1; j < 32; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / kLevels;
  const float id = d != 0.f ? 1.0f / d : 0.0f;
  for (int j = 0; j < 32; ++j) q[j] = uint8_t(std::min(kLevels, int((x[j] - min) * id + 0.5f)));
  *d_out = d;
  *m_out = min;
}

// Element j < 16 in the low nibble of qs[j], element j + 16 in the high nibble.
void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

// Bit j of the little-endian u32 = fifth bit of element j.
uint32_t fifth_bits(const uint8_t* q) {
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= uint32_t(q[j] >> 4 & 1) << j;
  return qh;
}

// ---- (sub-)block fits: the K formats, and the 32-element formats' scale search ----

// x[0..n) ~ scale * q with integer q in [-nmax, nmax - 1]; q into `q`, returns scale.
float fit_symmetric(const float* x, int n, int nmax, ScaleSearch search, int8_t* q) {
  const float max = x[argmax_abs(x, n)];
  if (std::fabs(max) < 1e-30f) {
    std::fill(q, q + n, int8_t(0));
    return 0.f;
  }
  auto round_with = [&](float iscale, int8_t* out) {
    for (int i = 0; i < n; ++i) out[i] = int8_t(std::clamp(nearest(iscale * x[i]), -nmax, nmax - 1));
  };
  const float iscale = -nmax / max;  // the extreme value lands on -nmax
  round_with(iscale, q);
  if (search == ScaleSearch::Nearest) return 1.f / iscale;
  // Least squares on fixed q: scale = <x,q>/<q,q>, leaving squared error <x,x> - <x,q>^2/<q,q>;
  // so the best candidate has the largest <x,q>^2/<q,q>.
  float best_scale = 0.f;
  double best_gain = -1.0;
  int8_t cand[256];
  for (int k = -9; k <= 9; ++k) {
    round_with(-(nmax + 0.1f * k) / max, cand);
    double sxq = 0, sqq = 0;
    for (int i = 0; i < n; ++i) {
      sxq += double(x[i]) * cand[i];
      sqq += double(cand[i]) * cand[i];
    }
    if (sqq == 0 || sxq * sxq / sqq <= best_gain) continue;
    best_gain = sxq * sxq / sqq;
    best_scale = float(sxq / sqq);
    std::copy(cand, cand + n, q);
  }
  return best_scale;
}

struct AffineFit {
  float scale = 0.f;
  float offset = 0.f;  // y = scale * q - offset
};

double affine_error(const float* x, const uint8_t* q, int n, AffineFit f) {
  double e = 0;
  for (int i = 0; i < n; ++i) {
    const double r = double(f.scale) * q[i] - f.offset - x[i];
    e += r * r;
  }
  return e;
}

// x[0..n) ~ scale * q - offset with integer q in [0, nmax]. With `nonneg_offset` (the K formats
// store the offset unsigned) a sub-block whose values are all positive is fitted from zero.
AffineFit fit_affine(const float* x, int n, int nmax, ScaleSearch search, bool nonneg_offset, uint8_t* q) {
  float min = *std::min_element(x, x + n);
  if (nonneg_offset) min = std::min(0.f, min);
  const float max = *std::max_element(x, x + n);
  if (max == min) {
    std::fill(q, q + n, uint8_t(0));
    return {0.f, -min};
  }
  auto round_with = [&](float iscale, uint8_t* out) {
    for (int i = 0; i < n; ++i) out[i] = uint8_t(std::clamp(nearest((x[i] - min) * iscale), 0, nmax));
  };
  const float iscale = nmax / (max - min);
  round_with(iscale, q);
  AffineFit best{1.f / iscale, -min};
  if (search == ScaleSearch::Nearest) return best;
  double best_err = affine_error(x, q, n, best);
  uint8_t cand[256];
  for (int k = -10; k <= 10; ++k) {
    round_with((nmax + 0.1f * k) / (max - min), cand);
    // Least squares for x ~ a * q + b on fixed q (b clamped to <= 0 for a non-negative offset).
    double sq = 0, sqq = 0, sx = 0, sxq = 0;
    for (int i = 0; i < n; ++i) {
      sq += cand[i];
      sqq += double(cand[i]) * cand[i];
      sx += x[i];
      sxq += double(x[i]) * cand[i];
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) continue;
    double a = (n * sxq - sq * sx) / det;
    double b = (sqq * sx - sq * sxq) / det;
    if (nonneg_offset && b > 0) {
      b = 0;
      a = sxq / sqq;
    }
    if (a <= 0) continue;
    const AffineFit f{float(a), float(-b)};
    const double err = affine_error(x, cand, n, f);
    if (err < best_err) {
      best_err = err;
      best = f;
      std::copy(cand, cand + n, q);
    }
  }
  return best;
}

// ---- 32-element formats with a scale search: the same layouts; the scale (and offset) come from
// fit_symmetric / fit_affine and the values are rounded again against their fp16 forms ----

template <int kHalf>
void symmetric_search(const float* x, float* d_out, uint8_t* q) {
  int8_t l[32];
  const float d = fp16_to_f32(f32_to_fp16(fit_symmetric(x, 32, kHalf, ScaleSearch::Search, l)));
  for (int j = 0; j < 32; ++j)
    q[j] = uint8_t(kHalf + (d != 0.f ? std::clamp(nearest(x[j] / d), -kHalf, kHalf - 1) : 0));
  *d_out = d;
}

template <int kLevels>
void affine_search(const float* x, float* d_out, float* m_out, uint8_t* q) {
  const AffineFit f = fit_affine(x, 32, kLevels, ScaleSearch::Search, false, q);
  const float d = fp16_to_f32(f32_to_fp16(f.scale));
  const float m = fp16_to_f32(f32_to_fp16(-f.offset));
  for (int j = 0; j < 32; ++j) q[j] = uint8_t(d != 0.f ? std::clamp(nearest((x[j] - m) / d), 0, kLevels) : 0);
  *d_out = d;
  *m_out = m;
}

void q4_0_block(const float* x, uint8_t* b, ScaleSearch search) {
  float d;
  uint8_t q[32];
  if (search == ScaleSearch::Search)
    symmetric_search<8>(x, &d, q);
  else
    symmetric_legacy<8>(x, &d, q);
  store_u16(b, f32_to_fp16(d));
  pack_nibbles(q, b + 2);
}

void q4_1_block(const float* x, uint8_t* b, ScaleSearch search) {
  float d, m;
  uint8_t q[32];
  if (search == ScaleSearch::Search)
    affine_search<15>(x, &d, &m, q);
  else
    affine_legacy<15>(x, &d, &m, q);
  store_u16(b, f32_to_fp16(d));
  store_u16(b + 2, f32_to_fp16(m));
  pack_nibbles(q, b + 4);
}

void q5_0_block(const float* x, uint8_t* b, ScaleSearch search) {
  float d;
  uint8_t q[32];
  if (search == ScaleSearch::Search)
    symmetric_search<16>(x, &d, q);
  else
    symmetric_legacy<16>(x, &d, q);
  store_u16(b, f32_to_fp16(d));
  store_u32(b + 2, fifth_bits(q));
  pack_nibbles(q, b + 6);
}

void q5_1_block(const float* x, uint8_t* b, ScaleSearch search) {
  float d, m;
  uint8_t q[32];
  if (search == ScaleSearch::Search)
    affine_search<31>(x, &d, &m, q);
  else
    affine_legacy<31>(x, &d, &m, q);
  store_u16(b, f32_to_fp16(d));
  store_u16(b + 2, f32_to_fp16(m));
  store_u32(b + 4, fifth_bits(q));
  pack_nibbles(q, b + 8);
}

// ---- K formats: super-blocks ----

// Signed sub-block scales as integers in [-(levels + 1), levels] times one fp16 d: the largest
// magnitude maps to -(levels + 1). Returns d as the decoder will see it (fp16-rounded).
float quantize_signed_scales(const float* scales, int n, int levels, int* ls, uint16_t* d_bits) {
  const float max = scales[argmax_abs(scales, n)];
  if (std::fabs(max) < 1e-30f) {
    std::fill(ls, ls + n, 0);
    *d_bits = 0;
    return 0.f;
  }
  const float iscale = -(levels + 1) / max;
  for (int j = 0; j < n; ++j) ls[j] = std::clamp(nearest(iscale * scales[j]), -(levels + 1), levels);
  *d_bits = f32_to_fp16(1.f / iscale);
  return fp16_to_f32(*d_bits);
}

// Non-negative values as integers in [0, levels] times one fp16 d (the largest maps to levels).
float quantize_unsigned_scales(const float* v, int n, int levels, int* l, uint16_t* d_bits) {
  const float max = *std::max_element(v, v + n);
  const float inv = max > 0 ? levels / max : 0.f;
  for (int j = 0; j < n; ++j) l[j] = std::min(levels, nearest(inv * v[j]));
  *d_bits = f32_to_fp16(max / levels);
  return fp16_to_f32(*d_bits);
}

// A 256-element super-block of 16-element sub-blocks with signed scales: q in [-nmax, nmax - 1]
// against d * ls[j]. Shared by Q3_K (nmax 4, 6-bit scales) and Q6_K (nmax 32, 8-bit scales).
void symmetric_superblock(const float* x, int nmax, int scale_levels, ScaleSearch search, int* ls, int8_t* q,
                          uint16_t* d_bits) {
  float scales[16];
  for (int j = 0; j < 16; ++j) scales[j] = fit_symmetric(x + 16 * j, 16, nmax, search, q + 16 * j);
  const float d = quantize_signed_scales(scales, 16, scale_levels, ls, d_bits);
  for (int j = 0; j < 16; ++j) {
    const float* xj = x + 16 * j;
    int8_t* qj = q + 16 * j;
    // Rounds the block against integer scale l; returns its squared error.
    auto round_block = [&](int l, int8_t* out) {
      const float dl = d * float(l);
      double e = 0;
      for (int i = 0; i < 16; ++i) {
        out[i] = int8_t(dl != 0.f ? std::clamp(nearest(xj[i] / dl), -nmax, nmax - 1) : 0);
        const double r = double(dl) * out[i] - xj[i];
        e += r * r;
      }
      return e;
    };
    double best = round_block(ls[j], qj);
    if (search == ScaleSearch::Nearest) continue;
    // The scale's nearest integer need not give the least error once the values are rounded too.
    for (int l : {ls[j] - 1, ls[j] + 1}) {
      if (l < -(scale_levels + 1) || l > scale_levels) continue;
      int8_t cand[16];
      const double e = round_block(l, cand);
      if (e < best) {
        best = e;
        ls[j] = l;
        std::copy(cand, cand + 16, qj);
      }
    }
  }
}

// A 256-element super-block of sub-blocks (n_sub of them) fitted as scale * q - offset; scales and
// offsets quantized to [0, levels] against fp16 d and dmin. Shared by Q2_K, Q4_K and Q5_K.
void affine_superblock(const float* x, int n_sub, int nmax, int levels, ScaleSearch search, int* ls, int* lm,
                       uint8_t* q, uint16_t* d_bits, uint16_t* dmin_bits) {
  const int len = 256 / n_sub;
  float scales[16], offsets[16];
  for (int j = 0; j < n_sub; ++j) {
    const AffineFit f = fit_affine(x + len * j, len, nmax, search, true, q + len * j);
    scales[j] = f.scale;
    offsets[j] = f.offset;
  }
  const float d = quantize_unsigned_scales(scales, n_sub, levels, ls, d_bits);
  const float dmin = quantize_unsigned_scales(offsets, n_sub, levels, lm, dmin_bits);
  for (int j = 0; j < n_sub; ++j) {
    const float* xj = x + len * j;
    uint8_t* qj = q + len * j;
    // Rounds the sub-block against integer scale l and offset m; returns its squared error.
    auto round_block = [&](int l, int m, uint8_t* out) {
      const float dl = d * float(l);
      const float ml = dmin * float(m);
      double e = 0;
      for (int i = 0; i < len; ++i) {
        out[i] = uint8_t(dl != 0.f ? std::clamp(nearest((xj[i] + ml) / dl), 0, nmax) : 0);
        const double r = double(dl) * out[i] - ml - xj[i];
        e += r * r;
      }
      return e;
    };
    double best = round_block(ls[j], lm[j], qj);
    if (search == ScaleSearch::Nearest) continue;
    // The nearest integers need not give the least error once the values are rounded too.
    const int l0 = ls[j], m0 = lm[j];
    for (int l = std::max(0, l0 - 1); l <= std::min(levels, l0 + 1); ++l)
      for (int m = std::max(0, m0 - 1); m <= std::min(levels, m0 + 1); ++m) {
        if (l == l0 && m == m0) continue;
        uint8_t cand[32];
        const double e = round_block(l, m, cand);
        if (e < best) {
          best = e;
          ls[j] = l;
          lm[j] = m;
          std::copy(cand, cand + len, qj);
        }
      }
  }
}

// block_q2_K: scales[16] (scale | offset << 4); qs[64]; fp16 d; fp16 dmin.
void q2_k_block(const float* x, uint8_t* b, ScaleSearch search) {
  int ls[16], lm[16];
  uint8_t q[256];
  uint16_t d, dmin;
  affine_superblock(x, 16, 3, 15, search, ls, lm, q, &d, &dmin);
  for (int j = 0; j < 16; ++j) b[j] = uint8_t(ls[j] | lm[j] << 4);
  uint8_t* qs = b + 16;
  std::memset(qs, 0, 64);
  // Element h*128 + s*32 + l: bits 2s of qs[h*32 + l].
  for (int e = 0; e < 256; ++e) qs[(e / 128) * 32 + e % 32] |= uint8_t(q[e] << (2 * ((e % 128) / 32)));
  store_u16(b + 80, d);
  store_u16(b + 82, dmin);
}

// block_q3_K: hmask[32]; qs[64]; scales[12] (16 six-bit, biased by 32); fp16 d.
void q3_k_block(const float* x, uint8_t* b, ScaleSearch search) {
  int ls[16];
  int8_t q[256];
  uint16_t d;
  symmetric_superblock(x, 4, 31, search, ls, q, &d);
  uint8_t* hmask = b;
  uint8_t* qs = b + 32;
  uint8_t* sc = b + 96;
  std::memset(b, 0, 108);
  // Element h*128 + s*32 + l: low two bits at 2s of qs[h*32 + l], third bit at 4h + s of hmask[l].
  for (int e = 0; e < 256; ++e) {
    const int v = q[e] + 4;
    const int h = e / 128, s = (e % 128) / 32, l = e % 32;
    qs[h * 32 + l] |= uint8_t((v & 3) << (2 * s));
    hmask[l] |= uint8_t((v >> 2) << (4 * h + s));
  }
  // Scale k: low nibble in byte k % 8 (high nibble when k >= 8), top two bits at 2*(k/4) of 8 + k%4.
  for (int k = 0; k < 16; ++k) {
    const int v = ls[k] + 32;
    sc[k % 8] |= uint8_t((v & 0xF) << (k < 8 ? 0 : 4));
    sc[8 + k % 4] |= uint8_t((v >> 4) << (2 * (k / 4)));
  }
  store_u16(b + 108, d);
}

// The 12 scale bytes of Q4_K / Q5_K (layout in quants_k.cpp, scale_min_k4).
void pack_scales_k4(const int* ls, const int* lm, uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t((ls[j] & 63) | (ls[j + 4] >> 4) << 6);
    s[j + 4] = uint8_t((lm[j] & 63) | (lm[j + 4] >> 4) << 6);
    s[j + 8] = uint8_t((ls[j + 4] & 0xF) | (lm[j + 4] & 0xF) << 4);
  }
}

// block_q4_K: fp16 d; fp16 dmin; scales[12]; qs[128] (element c*64 + k*32 + l: nibble k of qs[c*32 + l]).
void q4_k_block(const float* x, uint8_t* b, ScaleSearch search) {
  int ls[8], lm[8];
  uint8_t q[256];
  uint16_t d, dmin;
  affine_superblock(x, 8, 15, 63, search, ls, lm, q, &d, &dmin);
  store_u16(b, d);
  store_u16(b + 2, dmin);
  pack_scales_k4(ls, lm, b + 4);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) b[16 + c * 32 + l] = uint8_t(q[c * 64 + l] | q[c * 64 + 32 + l] << 4);
}

// block_q5_K: as Q4_K with qh[32] before qs: bit g of qh[l] is the fifth bit of element g*32 + l.
void q5_k_block(const float* x, uint8_t* b, ScaleSearch search) {
  int ls[8], lm[8];
  uint8_t q[256];
  uint16_t d, dmin;
  affine_superblock(x, 8, 31, 63, search, ls, lm, q, &d, &dmin);
  store_u16(b, d);
  store_u16(b + 2, dmin);
  pack_scales_k4(ls, lm, b + 4);
  uint8_t* qh = b + 16;
  std::memset(qh, 0, 32);
  for (int e = 0; e < 256; ++e) qh[e % 32] |= uint8_t((q[e] >> 4) << (e / 32));
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l)
      b[48 + c * 32 + l] = uint8_t((q[c * 64 + l] & 0xF) | (q[c * 64 + 32 + l] & 0xF) << 4);
}

// block_q6_K: ql[128]; qh[64]; i8 scales[16]; fp16 d. Element h*128 + r*32 + l (value + 32): low
// nibble at 4*(r/2) of ql[h*64 + (r%2)*32 + l], high two bits at 2r of qh[h*32 + l].
void q6_k_block(const float* x, uint8_t* b, ScaleSearch search) {
  int ls[16];
  int8_t q[256];
  uint16_t d;
  symmetric_superblock(x, 32, 127, search, ls, q, &d);
  std::memset(b, 0, 192);
  for (int e = 0; e < 256; ++e) {
    const int v = q[e] + 32;
    const int h = e / 128, r = (e % 128) / 32, l = e % 32;
    b[h * 64 + (r % 2) * 32 + l] |= uint8_t((v & 0xF) << (4 * (r / 2)));
    b[128 + h * 32 + l] |= uint8_t((v >> 4) << (2 * r));
  }
  for (int k = 0; k < 16; ++k) b[192 + k] = uint8_t(int8_t(ls[k]));
  store_u16(b + 208, d);
}

using BlockFn = void (*)(const float*, uint8_t*, ScaleSearch);

// Q8_0 has only ggml's reference quantizer (a search gains next to nothing at 8 bits); quantize_row
// refuses ScaleSearch::Search for it.
void q8_0_nearest(const float* x, uint8_t* b, ScaleSearch) {
  q8_0_block(x, b);
}

}  // namespace

bool can_quantize(GGMLType t) {
  switch (t) {
    case GGMLType::F32:
    case GGMLType::F16:
    case GGMLType::BF16:
    case GGMLType::Q8_0:
    case GGMLType::Q4_0:
    case GGMLType::Q4_1:
    case GGMLType::Q5_0:
    case GGMLType::Q5_1:
    case GGMLType::Q2_K:
    case GGMLType::Q3_K:
    case GGMLType::Q4_K:
    case GGMLType::Q5_K:
    case GGMLType::Q6_K:
      return true;
    default:
      return false;
  }
}

ScaleSearch default_search(GGMLType t) {
  return t == GGMLType::Q8_0 || type_traits(t).block_size == 1 ? ScaleSearch::Nearest : ScaleSearch::Search;
}

void quantize_row(GGMLType t, const float* src, void* dst, int64_t n) {
  quantize_row(t, src, dst, n, default_search(t));
}

void quantize_row(GGMLType t, const float* src, void* dst, int64_t n, ScaleSearch search) {
  QWEN_CHECK(can_quantize(t), "cannot quantize to ", type_name(t));
  const TypeTraits& tt = type_traits(t);
  QWEN_CHECK(n % tt.block_size == 0, "row of ", n, " elements is not a multiple of the ", type_name(t),
             " block size ", tt.block_size);
  QWEN_CHECK(search == ScaleSearch::Nearest || default_search(t) == ScaleSearch::Search, type_name(t),
             " has no scale search (Q8_0: only ggml's reference quantizer; float types: plain conversion)");
  uint8_t* out = static_cast<uint8_t*>(dst);
  BlockFn fn = nullptr;
  switch (t) {
    case GGMLType::F32:
      std::memcpy(out, src, size_t(n) * 4);
      return;
    case GGMLType::F16:
      for (int64_t i = 0; i < n; ++i) store_u16(out + 2 * i, f32_to_fp16(src[i]));
      return;
    case GGMLType::BF16:
      for (int64_t i = 0; i < n; ++i) store_u16(out + 2 * i, f32_to_bf16(src[i]));
      return;
    case GGMLType::Q8_0:
      fn = q8_0_nearest;
      break;
    case GGMLType::Q4_0:
      fn = q4_0_block;
      break;
    case GGMLType::Q4_1:
      fn = q4_1_block;
      break;
    case GGMLType::Q5_0:
      fn = q5_0_block;
      break;
    case GGMLType::Q5_1:
      fn = q5_1_block;
      break;
    case GGMLType::Q2_K:
      fn = q2_k_block;
      break;
    case GGMLType::Q3_K:
      fn = q3_k_block;
      break;
    case GGMLType::Q4_K:
      fn = q4_k_block;
      break;
    case GGMLType::Q5_K:
      fn = q5_k_block;
      break;
    case GGMLType::Q6_K:
      fn = q6_k_block;
      break;
    default:
      QWEN_ASSERT(false);
  }
  const int64_t qk = tt.block_size;
  for (int64_t b = 0; b < n / qk; ++b) fn(src + b * qk, out + b * tt.block_bytes, search);
}

}  // namespace qwen
