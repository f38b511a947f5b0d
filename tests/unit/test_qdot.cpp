// The CPU fast path (backend/cpu/qdot.h) against the exact fp32 path.
//
// The only approximation of the fast path is the activation quantization: each x_i is replaced
// by d * round(x_i / d) with d = max|x| / 127 over its 32-block, an error of at most d / 2. So the
// metric is |fast - exact| <= sum_i |w_i| * d_i / 2 (w the dequantized row) plus 1e-4 relative
// slack for the fp32 sums; everything else (the integer sums) is exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/qdot.h"
#include "gguf/ggml_types.h"
#include "random_quant.h"

namespace {

using qwen::GGMLType;
using qwen::cpu::QuantizedRow;

struct Quantized {
  std::vector<int8_t> q;
  std::vector<float> d16, s16;
  explicit Quantized(int64_t n) : q(n), d16(n / 16), s16(n / 16) {}
  QuantizedRow row() { return {q.data(), d16.data(), s16.data()}; }
};

std::vector<float> random_x(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  x[5] = 0.f;  // a zero and a block of zeros (d = 0) must not divide by zero
  std::fill(x.begin() + 32, x.begin() + 64, 0.f);
  return x;
}

TEST(QDot, QuantizeRoundsEachBlockTo127Steps) {
  std::mt19937 rng(1);
  const int64_t n = 256;
  const std::vector<float> x = random_x(n, rng);
  Quantized xq(n);
  qwen::cpu::qdot_kernels().quantize(x.data(), n, xq.row());
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    EXPECT_EQ(xq.d16[2 * b], amax / 127.f);
    EXPECT_EQ(xq.d16[2 * b + 1], amax / 127.f);
    for (int h = 0; h < 2; ++h) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) {
        const int64_t j = b * 32 + h * 16 + i;
        sum += xq.q[j];
        // Metric: |x - d q| <= d / 2 (round to nearest), with 1e-6 relative slack.
        EXPECT_LE(std::fabs(x[j] - xq.d16[2 * b] * xq.q[j]), xq.d16[2 * b] * 0.5f + 1e-6f * amax) << j;
      }
      EXPECT_EQ(xq.s16[2 * b + h], xq.d16[2 * b] * float(sum));
    }
  }
}

// Every quantized type at the model's odd row lengths: error within the bound in the header.
void check_against_exact(const qwen::cpu::QDotKernels& k) {
  std::mt19937 rng(7);
  int checked = 0;
  for (const auto& l : qwen::test::layouts()) {
    if (k.dot(l.type) == nullptr) {
      EXPECT_EQ(l.block_size, 1) << qwen::type_name(l.type) << ": a quantized type without a fast kernel";
      continue;
    }
    for (const int64_t n : {256, 896, 4864}) {
      if (n % l.block_size != 0) continue;
      for (int rep = 0; rep < 8; ++rep) {
        const std::vector<uint8_t> row = qwen::test::random_row(l, n, rng);
        const std::vector<float> x = random_x(n, rng);
        std::vector<float> w(n);
        qwen::dequantize_row(l.type, row.data(), w.data(), n);
        Quantized xq(n);
        k.quantize(x.data(), n, xq.row());
        double exact = 0.0, bound = 0.0, mag = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          exact += double(w[i]) * x[i];
          bound += std::fabs(double(w[i])) * xq.d16[i / 16] / 2;
          mag += std::fabs(double(w[i]) * x[i]);
        }
        const float fast = k.dot(l.type)(row.data(), xq.row(), n);
        EXPECT_LE(std::fabs(fast - exact), bound + 1e-4 * mag)
            << k.isa << " " << qwen::type_name(l.type) << " n=" << n << " rep " << rep;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, (5 * 3 + 5 * 2) * 8);  // 32-element types at 3 lengths, K types at 2
}

TEST(QDot, GenericMatchesExactDotWithinActivationRounding) {
  check_against_exact(qwen::cpu::qdot_generic());
}

TEST(QDot, Avx2MatchesExactDotWithinActivationRounding) {
  const qwen::cpu::QDotKernels* avx2 = qwen::cpu::qdot_avx2();
  if (avx2 == nullptr) GTEST_SKIP() << "this build or CPU has no AVX2 kernels";
  check_against_exact(*avx2);
}

// Both builds quantize activations to the same bits (no FMA contraction in either), so they see the
// same integers and differ only in the order of float sums.
TEST(QDot, Avx2QuantizesLikeGeneric) {
  const qwen::cpu::QDotKernels* avx2 = qwen::cpu::qdot_avx2();
  if (avx2 == nullptr) GTEST_SKIP() << "this build or CPU has no AVX2 kernels";
  std::mt19937 rng(11);
  const int64_t n = 4864;
  const std::vector<float> x = random_x(n, rng);
  Quantized a(n), b(n);
  qwen::cpu::qdot_generic().quantize(x.data(), n, a.row());
  avx2->quantize(x.data(), n, b.row());
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.d16, b.d16);
  EXPECT_EQ(a.s16, b.s16);
}

// The backend in fast mode: matmul over 1 and 7 tokens with a bias, each output within the bound
// above of the exact backend's; a float-type weight (no integer kernel) gives the exact bits.
TEST(QDot, FastBackendMatmulMatchesExact) {
  auto exact = qwen::make_cpu_backend(2, true);
  auto fast = qwen::make_cpu_backend(2, false);
  EXPECT_NE(fast->name().find("fast"), std::string::npos) << fast->name();
  EXPECT_NE(exact->name().find("exact"), std::string::npos) << exact->name();
  std::mt19937 rng(3);
  const int64_t k = 896, m = 40;
  for (const GGMLType t : {GGMLType::Q5_0, GGMLType::Q8_0, GGMLType::F16}) {
    const qwen::test::Layout& l = *std::find_if(qwen::test::layouts().begin(), qwen::test::layouts().end(),
                                                [&](const qwen::test::Layout& x) { return x.type == t; });
    std::vector<uint8_t> wbytes;
    for (int64_t o = 0; o < m; ++o) {
      const std::vector<uint8_t> r = qwen::test::random_row(l, k, rng);
      wbytes.insert(wbytes.end(), r.begin(), r.end());
    }
    const qwen::Weight w{t, k, m, wbytes.data()};
    std::vector<float> bias(m);
    for (float& b : bias) b = float(rng() % 100) / 10.f;
    for (const int n_tokens : {1, 7}) {
      std::vector<float> x;
      for (int tok = 0; tok < n_tokens; ++tok) {
        const std::vector<float> xt = random_x(k, rng);
        x.insert(x.end(), xt.begin(), xt.end());
      }
      std::vector<float> ye(n_tokens * m), yf(n_tokens * m);
      exact->matmul(ye.data(), w, x.data(), n_tokens, bias.data());
      fast->matmul(yf.data(), w, x.data(), n_tokens, bias.data());
      if (t == GGMLType::F16) {
        EXPECT_EQ(ye, yf);
        continue;
      }
      std::vector<float> row(k);
      for (int tok = 0; tok < n_tokens; ++tok)
        for (int64_t o = 0; o < m; ++o) {
          qwen::dequantize_row(t, wbytes.data() + o * w.row_bytes(), row.data(), k);
          double bound = 0.0, mag = 0.0;
          for (int64_t b = 0; b < k / 32; ++b) {
            float amax = 0.f, wsum = 0.f;
            for (int i = 0; i < 32; ++i) {
              amax = std::max(amax, std::fabs(x[tok * k + b * 32 + i]));
              wsum += std::fabs(row[b * 32 + i]);
              mag += std::fabs(double(row[b * 32 + i]) * x[tok * k + b * 32 + i]);
            }
            bound += double(wsum) * amax / 127 / 2;
          }
          EXPECT_LE(std::fabs(yf[tok * m + o] - ye[tok * m + o]), bound + 1e-4 * mag + 1e-5)
              << qwen::type_name(t) << " token " << tok << " row " << o;
        }
    }
  }
}

}  // namespace
