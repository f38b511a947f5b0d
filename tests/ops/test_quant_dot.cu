// The fast decode GEMV's arithmetic (src/backend/cuda/quant_dot.cuh), run on the host (it is
// __host__ __device__): the 16-bit quantization of x and every UnitDot, against the CPU
// dequantizer in double precision. No GPU needed, so CI runs it; tests/ops/test_matmul_parity.cpp
// (FastDecode) checks the kernel itself on the GPU.
//
// Metrics:
//  - x: |x - x^| <= s / 256 per element, s = amax / 127 of its 32-block (s / 512 from rounding,
//    up to s / 256 where the clamp of xl binds), and the RMS of x - x^ <= s / 700 (rounding to
//    a uniform grid of step s / 256 gives s / 887);
//  - each row's sum of unit dots equals sum(dequant(w) x^) in double within 1e-6 * sum|w x^| (the
//    integer sums are exact; the scales are applied in fp32);
//  - against the exact product sum(w x): NMSE over the rows <= 2e-9, the bound the GPU test uses
//    (random x uniform in [-1, 1]);
//  - a non-finite x makes the outputs NaN.
// Rows are consecutive, so Q8_0's 34-byte blocks start at both alignments the GPU sees.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/quant_dot.cuh"
#include "ops_test_util.h"

namespace qwen::test {
namespace {

constexpr int64_t kRows = 16;
constexpr int64_t kCols = 1024;  // 4 super-blocks

// x quantized in host memory.
struct HostXq {
  explicit HostXq(const std::vector<float>& x)
      : n(int64_t(x.size())), mem((cuda::XqRow::bytes(n) + 15) / 16), q(cuda::XqRow::carve(mem.data(), n)) {
    cuda::xq_row_host(x.data(), n, q);
  }
  // x^ of element e.
  double value(int64_t e) const {
    const int h = int8_t(q.h[e / 4] >> (8 * (e % 4))), l = int8_t(q.l[e / 4] >> (8 * (e % 4)));
    return double(q.sc[e / 32]) * (256.0 * h + l);
  }
  int64_t n;
  std::vector<uint4> mem;
  cuda::XqRow q;
};

TEST(QuantDotX, QuantizationErrorWithinBounds) {
  std::mt19937 rng(11);
  // Blocks of uniform values, of one outlier among small values, of zeros, and of tiny values.
  std::vector<float> x = random_floats(rng, 32 * 64, -3.f, 3.f);
  for (int k = 0; k < 32; ++k) x[32 + k] = k == 5 ? 100.f : 1e-3f * float(k - 16);
  for (int k = 0; k < 32; ++k) x[64 + k] = 0.f;
  for (int k = 0; k < 32; ++k) x[96 + k] = 1e-30f * float(k + 1);
  const HostXq xq(x);
  for (int64_t b = 0; b < int64_t(x.size()) / 32; ++b) {
    float amax = 0.f;
    for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[32 * b + k]));
    const double s = double(amax) / 127.0;
    double sq = 0;
    for (int k = 0; k < 32; ++k) {
      const int64_t e = 32 * b + k;
      const double err = std::fabs(xq.value(e) - double(x[e]));
      sq += err * err;
      EXPECT_LE(err, s * (1.0 / 256 + 1e-5)) << "block " << b << " element " << k << ": x " << x[e];
    }
    if (amax > 0.f) {
      EXPECT_LE(std::sqrt(sq / 32), s / 700.0) << "block " << b;
    }
    EXPECT_EQ(xq.q.isum[2 * b] + xq.q.isum[2 * b + 1],
              [&] {
                int t = 0;
                for (int k = 0; k < 32; ++k) t += int(std::lround(xq.value(32 * b + k) / double(xq.q.sc[b])));
                return t;
              }())
        << "block " << b;
  }
}

class QuantDot : public ::testing::TestWithParam<GGMLType> {};

// The host twin of gemv_dot_kernel for one row: the sum of its units' dots.
template <GGMLType T>
float row_dot(const uint8_t* row, const cuda::XqRow& x, int64_t ne0) {
  using U = cuda::UnitDot<T>;
  float acc = 0.f;
  for (int64_t u = 0; u < ne0 / U::kElems; ++u) {
    U w;
    w.load(row, u);
    cuda::Xq16 p[U::kPieces];
    U::load_x(x, u, p);
    acc += w.dot(p);
  }
  return acc;
}

float dot_row(GGMLType t, const uint8_t* row, const cuda::XqRow& x, int64_t ne0) {
  float out = 0.f;
  cuda::dispatch_type(t, "test", [&]<GGMLType T>() {
    if constexpr (cuda::has_unit_dot(T)) out = row_dot<T>(row, x, ne0);
  });
  return out;
}

TEST_P(QuantDot, UnitsEqualDequantizedProduct) {
  const GGMLType t = GetParam();
  std::mt19937 rng(3 + unsigned(t));
  const std::vector<uint8_t> w = random_weight(rng, t, kRows, kCols);
  const std::vector<float> x = random_floats(rng, kCols);
  const HostXq xq(x);
  const size_t rb = row_bytes(t, kCols);
  double err2 = 0, ref2 = 0;
  std::vector<float> wr(kCols);
  for (int64_t r = 0; r < kRows; ++r) {
    dequantize_row(t, w.data() + r * rb, wr.data(), kCols);
    double quant = 0, quant_abs = 0, exact = 0;
    for (int64_t e = 0; e < kCols; ++e) {
      quant += double(wr[e]) * xq.value(e);
      quant_abs += std::fabs(double(wr[e]) * xq.value(e));
      exact += double(wr[e]) * x[e];
    }
    const float got = dot_row(t, w.data() + r * rb, xq.q, kCols);
    EXPECT_LE(std::fabs(got - quant), 1e-6 * quant_abs)
        << type_name(t) << " row " << r << ": " << got << " vs " << quant << " (with x^ in double)";
    err2 += (got - exact) * (got - exact);
    ref2 += exact * exact;
  }
  EXPECT_LE(err2 / ref2, 2e-9) << type_name(t) << ": NMSE against the exact x";
}

TEST_P(QuantDot, NonFiniteXGivesNan) {
  const GGMLType t = GetParam();
  std::mt19937 rng(5 + unsigned(t));
  const std::vector<uint8_t> w = random_weight(rng, t, 1, kCols);
  for (float bad : {NAN, INFINITY}) {
    std::vector<float> x = random_floats(rng, kCols);
    x[kCols / 2 + 3] = bad;
    const HostXq xq(x);
    EXPECT_TRUE(std::isnan(dot_row(t, w.data(), xq.q, kCols))) << type_name(t) << " with x = " << bad;
  }
}

INSTANTIATE_TEST_SUITE_P(DotTypes, QuantDot,
                         ::testing::Values(GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0,
                                           GGMLType::Q5_1, GGMLType::Q4_K, GGMLType::Q5_K),
                         [](const ::testing::TestParamInfo<GGMLType>& i) {
                           return std::string(type_name(i.param));
                         });

}  // namespace
}  // namespace qwen::test
