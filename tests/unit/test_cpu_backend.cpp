// CPU backend ops against hand-written expectations and naive loops. These ops are the oracle of
// the CUDA parity tests, so each is pinned here on its own: exact values where the math is exact,
// else max |Δ| with the tolerance stated next to the check.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "gguf/quantize.h"
#include "util/half.h"

namespace qwen {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0.f;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST(CpuBackend, RmsNormMatchesFormula) {
  auto be = make_cpu_backend(2);
  const std::vector<float> x = {1.f, 2.f, 3.f, 4.f, -1.f, 0.f, 0.f, 1.f};
  const std::vector<float> w = {1.f, 0.5f, 2.f, 1.f};
  std::vector<float> out(8);
  be->rmsnorm(out.data(), x.data(), w.data(), 2, 4, 0.f);
  const float s0 = 1.f / std::sqrt(30.f / 4.f), s1 = 1.f / std::sqrt(2.f / 4.f);
  const std::vector<float> want = {1 * s0, 1 * s0, 6 * s0, 4 * s0, -1 * s1, 0, 0, 1 * s1};
  EXPECT_LE(max_abs_diff(out, want), 1e-6f);
}

// Rotating (1, 0) by theta gives (cos, sin) * mscale: checks which elements each mode pairs and
// that pair i turns by pos * inv_freq[i] (max |Δ| <= 1e-6 against the formula in fp64).
TEST(CpuBackend, RopePairsAndFrequencies) {
  auto be = make_cpu_backend(1);
  const int d = 4;
  const int32_t pos[1] = {3};
  const float inv_freq[2] = {1.f, 0.1f};
  const double t0 = 3.0, t1 = 3.0 * double(0.1f);
  for (const float m : {1.f, 1.25f}) {
    std::vector<float> neox = {1.f, 1.f, 0.f, 0.f};  // pairs (0,2) and (1,3)
    be->rope(neox.data(), pos, 1, 1, d, RopeParams{inv_freq, m, RopeMode::Neox});
    const std::vector<float> want_neox = {float(m * std::cos(t0)), float(m * std::cos(t1)),
                                          float(m * std::sin(t0)), float(m * std::sin(t1))};
    EXPECT_LE(max_abs_diff(neox, want_neox), 1e-6f) << "mscale " << m;
    std::vector<float> normal = {1.f, 0.f, 1.f, 0.f};  // pairs (0,1) and (2,3)
    be->rope(normal.data(), pos, 1, 1, d, RopeParams{inv_freq, m, RopeMode::Normal});
    const std::vector<float> want_normal = {float(m * std::cos(t0)), float(m * std::sin(t0)),
                                            float(m * std::cos(t1)), float(m * std::sin(t1))};
    EXPECT_LE(max_abs_diff(normal, want_normal), 1e-6f) << "mscale " << m;
  }
}

// Two sequences in one batch, GQA 4:2: attention through the cache equals a naive softmax over
// each token's own sequence prefix (max |Δ| <= 1e-5), for an F32 cache; an F16 cache agrees to 2e-3.
TEST(CpuBackend, AttentionOverCacheMatchesNaive) {
  const int n_head = 4, n_kv = 2, d = 8, n_ctx = 16;
  // Sequence 0 gets positions 0..4, sequence 1 positions 0..2, interleaved in one batch.
  const std::vector<int32_t> seq = {0, 1, 0, 1, 0, 1, 0, 0}, pos = {0, 0, 1, 1, 2, 2, 3, 4};
  const int n = int(seq.size());
  const auto q = random_vec(size_t(n) * n_head * d, 1), k = random_vec(size_t(n) * n_kv * d, 2),
             v = random_vec(size_t(n) * n_kv * d, 3);
  std::vector<float> want(q.size());
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < n_head; ++h) {
      const int hk = h / (n_head / n_kv);
      std::vector<double> s;
      std::vector<int> src;
      for (int u = 0; u < n; ++u) {
        if (seq[u] != seq[t] || pos[u] > pos[t]) continue;
        double dot = 0;
        for (int i = 0; i < d; ++i) dot += q[(t * n_head + h) * d + i] * k[(u * n_kv + hk) * d + i];
        s.push_back(dot / std::sqrt(double(d)));
        src.push_back(u);
      }
      double mx = -1e30, sum = 0;
      for (double x : s) mx = std::max(mx, x);
      for (double& x : s) sum += x = std::exp(x - mx);
      for (int i = 0; i < d; ++i) {
        double o = 0;
        for (size_t j = 0; j < s.size(); ++j) o += s[j] / sum * v[(src[j] * n_kv + hk) * d + i];
        want[(t * n_head + h) * d + i] = float(o);
      }
    }
  }
  for (GGMLType type : {GGMLType::F32, GGMLType::F16}) {
    auto be = make_cpu_backend(2);
    const size_t elems = size_t(2) * n_ctx * n_kv * d, bytes = elems * (type == GGMLType::F32 ? 4 : 2);
    KVLayer cache{be->alloc(bytes), be->alloc(bytes), type, 2, n_ctx, n_kv, d};
    const Batch batch{n, nullptr, pos.data(), seq.data()};
    be->kv_store(cache, k.data(), v.data(), batch);
    std::vector<float> out(q.size());
    be->attention(out.data(), q.data(), cache, batch, {n_head, n_kv, d, 1.f / std::sqrt(float(d))});
    EXPECT_LE(max_abs_diff(out, want), type == GGMLType::F32 ? 1e-5f : 2e-3f) << type_name(type);
    be->free(cache.k);
    be->free(cache.v);
  }
}

// Quantized and 16-bit caches (BF16, Q8_0; F16 too): kv_store writes each (seq, pos) row exactly
// as gguf's quantize_row does (the quantizer test_quantize.py checks byte for byte against the
// PyPI gguf package), and attention over that cache equals, bit for bit, attention over an F32
// cache holding its dequantized values: the cache type changes what is stored, never the
// arithmetic after it. Two sequences, GQA 4:2, head_dim 64 (two Q8_0 blocks per head).
TEST(CpuBackend, TypedCacheIsQuantizeRowAndAttentionOverItsValues) {
  const int n_head = 4, n_kv = 2, d = 64, n_ctx = 8, n_seq = 2, width = n_kv * d;
  const std::vector<int32_t> seq = {0, 1, 0, 1, 0, 0}, pos = {0, 0, 1, 1, 2, 3};
  const int n = int(seq.size());
  auto q = random_vec(size_t(n) * n_head * d, 11), k = random_vec(size_t(n) * width, 12),
       v = random_vec(size_t(n) * width, 13);
  k[5] = 0.f, v[7] = -0.f;                   // a zero and a negative zero
  for (int i = 64; i < 96; ++i) k[i] = 0.f;  // an all-zero block: d = 0, every q = 0
  auto be = make_cpu_backend(2);
  const Batch batch{n, nullptr, pos.data(), seq.data()};
  const AttentionParams ap{n_head, n_kv, d, 1.f / std::sqrt(float(d))};
  for (GGMLType type : {GGMLType::F16, GGMLType::BF16, GGMLType::Q8_0}) {
    SCOPED_TRACE(type_name(type));
    const size_t rb = row_bytes(type, width), bytes = size_t(n_seq) * n_ctx * rb;
    std::vector<uint8_t> kc(bytes, 0), vc(bytes, 0);
    KVLayer cache{kc.data(), vc.data(), type, n_seq, n_ctx, n_kv, d};
    be->kv_store(cache, k.data(), v.data(), batch);
    // Stored rows: quantize_row of each token's k / v, at (seq, pos).
    std::vector<uint8_t> want(rb);
    for (int t = 0; t < n; ++t) {
      const size_t at = (size_t(seq[t]) * n_ctx + size_t(pos[t])) * rb;
      quantize_row(type, k.data() + size_t(t) * width, want.data(), width);
      EXPECT_EQ(0, std::memcmp(kc.data() + at, want.data(), rb)) << "K row of token " << t;
      quantize_row(type, v.data() + size_t(t) * width, want.data(), width);
      EXPECT_EQ(0, std::memcmp(vc.data() + at, want.data(), rb)) << "V row of token " << t;
    }
    // The same cache dequantized into F32.
    const size_t rows = size_t(n_seq) * n_ctx;
    std::vector<float> kf(rows * width), vf(rows * width);
    for (size_t r = 0; r < rows; ++r) {
      dequantize_row(type, kc.data() + r * rb, kf.data() + r * width, width);
      dequantize_row(type, vc.data() + r * rb, vf.data() + r * width, width);
    }
    KVLayer f32{kf.data(), vf.data(), GGMLType::F32, n_seq, n_ctx, n_kv, d};
    std::vector<float> got(q.size()), ref(q.size());
    be->attention(got.data(), q.data(), cache, batch, ap);
    be->attention(ref.data(), q.data(), f32, batch, ap);
    EXPECT_EQ(got, ref);
  }
}

// Q8_0 against the formula of ggml's reference quantizer, d = amax / 127 stored as fp16 and
// q = round(x / d) half away from zero (exact): one block with known values.
TEST(CpuBackend, Q8CacheBlockFormula) {
  const int d = 32;
  std::vector<float> k(d), v(d, 0.f);
  for (int i = 0; i < d; ++i) k[i] = float(i - 16) * 0.5f;  // amax 8 at i = 0, and 0.5-steps
  std::vector<uint8_t> kc(34), vc(34);
  KVLayer cache{kc.data(), vc.data(), GGMLType::Q8_0, 1, 1, 1, d};
  const int32_t pos = 0, seq = 0;
  make_cpu_backend(1)->kv_store(cache, k.data(), v.data(), Batch{1, nullptr, &pos, &seq});
  const float scale = 8.f / 127;
  uint16_t dh;
  std::memcpy(&dh, kc.data(), 2);
  EXPECT_EQ(dh, f32_to_fp16(scale));
  for (int i = 0; i < d; ++i) EXPECT_EQ(int8_t(kc[2 + i]), int8_t(std::round(k[i] * (1.f / scale)))) << i;
  EXPECT_EQ(int8_t(kc[2]), -127);
  EXPECT_EQ(vc, std::vector<uint8_t>(34, 0));  // all zeros: d = 0 and q = 0
}

// The one-token (vec_dot) and many-token (dequantized row) matmul paths agree within 1e-4 for a
// quantized weight, with bias, and results do not depend on the thread count (bitwise).
TEST(CpuBackend, MatmulPathsAndThreadsAgree) {
  const int k = 64, m = 5, n = 6;
  // Q8_0 rows: per 32-element block an fp16 scale then 32 int8 values.
  std::vector<uint8_t> w(size_t(m) * (k / 32) * 34);
  std::mt19937 rng(9);
  for (size_t b = 0; b < w.size() / 34; ++b) {
    const uint16_t scale = f32_to_fp16(0.01f * float(b + 1));
    std::memcpy(&w[b * 34], &scale, 2);
    for (int i = 0; i < 32; ++i) w[b * 34 + 2 + i] = uint8_t(rng());
  }
  const Weight W{GGMLType::Q8_0, k, m, w.data()};
  const auto x = random_vec(size_t(n) * k, 4), bias = random_vec(m, 5);
  auto be1 = make_cpu_backend(1), be2 = make_cpu_backend(2);
  std::vector<float> batched(size_t(n) * m), batched2(size_t(n) * m), single(size_t(n) * m);
  be1->matmul(batched.data(), W, x.data(), n, bias.data());
  be2->matmul(batched2.data(), W, x.data(), n, bias.data());
  for (int t = 0; t < n; ++t) be2->matmul(single.data() + t * m, W, x.data() + t * k, 1, bias.data());
  EXPECT_EQ(batched, batched2);
  EXPECT_LE(max_abs_diff(batched, single), 1e-4f);
  // Against the dequantized weight in double: <= 1e-4.
  std::vector<float> row(k);
  for (int o = 0; o < m; ++o) {
    dequantize_row(GGMLType::Q8_0, w.data() + size_t(o) * W.row_bytes(), row.data(), k);
    for (int t = 0; t < n; ++t) {
      double s = bias[o];
      for (int i = 0; i < k; ++i) s += double(row[i]) * x[t * k + i];
      EXPECT_NEAR(batched[t * m + o], s, 1e-4);
    }
  }
}

TEST(CpuBackend, EmbedSwigluAddArgmax) {
  auto be = make_cpu_backend(2);
  const std::vector<float> table = {0, 1, 2, 3, 4, 5};  // 3 rows of 2
  const Weight T{GGMLType::F32, 2, 3, table.data()};
  const int32_t ids[3] = {2, 0, 2};
  std::vector<float> e(6);
  be->embed(e.data(), T, ids, 3);
  EXPECT_EQ(e, (std::vector<float>{4, 5, 0, 1, 4, 5}));
  const std::vector<float> g = {0.f, 1.f, -2.f}, u = {3.f, 2.f, 1.f};
  std::vector<float> s(3);
  be->swiglu(s.data(), g.data(), u.data(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(s[i], g[i] / (1 + std::exp(-g[i])) * u[i], 1e-6);
  be->add(s.data(), s.data(), u.data(), 3);
  EXPECT_NEAR(s[0], 3.f, 1e-6);
  const std::vector<float> rows = {1, 5, 5, 0, -1, -3, -2, -1};
  int32_t am[2];
  be->argmax(am, rows.data(), 2, 4);
  EXPECT_EQ(am[0], 1);  // lowest index on ties
  EXPECT_EQ(am[1], 0);
}

}  // namespace
}  // namespace qwen
