// ggml type table, row dequantization known answers, and vec_dot against a double-precision
// dot of the dequantized row. (Bit-exactness of dequantization against gguf.quants.dequantize for
// every type is checked in tests/python/test_gguf_quants.py.)
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gguf/ggml_types.h"
#include "random_quant.h"
#include "util/check.h"
#include "util/half.h"

namespace {

using qwen::GGMLType;
using qwen::test::Layout;
using qwen::test::layouts;
using qwen::test::random_row;

TEST(GgmlTypes, TableMatchesBlockLayouts) {
  for (const Layout& l : layouts()) {
    const qwen::TypeTraits& t = qwen::type_traits(l.type);
    EXPECT_EQ(t.block_size, l.block_size) << t.name;
    EXPECT_EQ(t.block_bytes, l.block_bytes) << t.name;
    EXPECT_TRUE(t.supported) << t.name;
    EXPECT_EQ(qwen::parse_type(t.name), l.type);
  }
  EXPECT_EQ(qwen::parse_type("q4_k"), GGMLType::Q4_K);
  EXPECT_EQ(qwen::parse_type("bf16"), GGMLType::BF16);
  EXPECT_EQ(qwen::type_traits(4u), nullptr);  // retired id
  EXPECT_EQ(qwen::type_traits(1000u), nullptr);
  EXPECT_STREQ(qwen::type_name(GGMLType(16)), "IQ2_XXS");
  EXPECT_FALSE(qwen::type_traits(GGMLType::Q8_K).supported);
  EXPECT_EQ(qwen::row_bytes(GGMLType::Q4_K, 4864), 19u * 144);
  EXPECT_EQ(qwen::row_bytes(GGMLType::F16, 7), 14u);
  try {
    qwen::parse_type("q9_9");
    ADD_FAILURE();
  } catch (const qwen::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'q9_9'"), std::string::npos) << e.what();
  }
  try {
    qwen::row_bytes(GGMLType::Q8_0, 33);
    ADD_FAILURE();
  } catch (const qwen::Error& e) {
    EXPECT_NE(std::string(e.what()).find("33 elements"), std::string::npos) << e.what();
  }
}

TEST(GgmlTypes, UnsupportedTypeIsAnErrorNamingIt) {
  std::vector<uint8_t> block(66, 0);
  float out[256], x[256] = {};
  for (auto call :
       {+[](const void*b, float*o, const float*) { qwen::dequantize_row(GGMLType(16), b, o, 256); },
        +[](const void*b, float*, const float*xx) { qwen::vec_dot(GGMLType(16), b, xx, 256); },
        +[](const void*, float*, const float*) { qwen::vec_dot_fn(GGMLType(16)); }}) {
    try {
      call(block.data(), out, x);
      ADD_FAILURE();
    } catch (const qwen::Error& e) {
      EXPECT_NE(std::string(e.what()).find("IQ2_XXS"), std::string::npos) << e.what();
    }
  }
}

// Hand-computed blocks. Metric: exact equality.
TEST(Dequantize, KnownAnswers) {
  float y[32];
  // Q8_0: d = 0.5, q = j - 16.
  uint8_t q8[34] = {0x00, 0x38};
  for (int j = 0; j < 32; ++j) q8[2 + j] = uint8_t(int8_t(j - 16));
  qwen::dequantize_row(GGMLType::Q8_0, q8, y, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.5f * float(j - 16)) << j;
  // Q4_0: d = 2, qs[j] = j | (15 - j) << 4: element j = 2 (j - 8), element j + 16 = 2 (7 - j).
  uint8_t q4[18] = {0x00, 0x40};
  for (int j = 0; j < 16; ++j) q4[2 + j] = uint8_t(j | ((15 - j) << 4));
  qwen::dequantize_row(GGMLType::Q4_0, q4, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 2.f * float(j - 8)) << j;
    EXPECT_EQ(y[j + 16], 2.f * float(7 - j)) << j;
  }
  // Q4_1: d = 1, m = -0.5, same nibbles: element j = j - 0.5.
  uint8_t q41[20] = {0x00, 0x3c, 0x00, 0xb8};
  for (int j = 0; j < 16; ++j) q41[4 + j] = uint8_t(j | ((15 - j) << 4));
  qwen::dequantize_row(GGMLType::Q4_1, q41, y, 32);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(y[j], float(j) - 0.5f) << j;
  // Q5_0: d = 1, all low nibbles 0, qh = 0xffff0000: elements 0..15 are -16, 16..31 are 0.
  uint8_t q5[22] = {0x00, 0x3c, 0x00, 0x00, 0xff, 0xff};
  qwen::dequantize_row(GGMLType::Q5_0, q5, y, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], -16.f) << j;
    EXPECT_EQ(y[j + 16], 0.f) << j;
  }
  // F16 with inf and a subnormal.
  const uint16_t h[3] = {0x7c00, 0x0001, 0xc000};
  qwen::dequantize_row(GGMLType::F16, h, y, 3);
  EXPECT_EQ(y[0], INFINITY);
  EXPECT_EQ(y[1], std::ldexp(1.f, -24));
  EXPECT_EQ(y[2], -2.f);
}

// vec_dot(row, x) vs sum_i dequant(row)_i * x_i in double. Tolerance: the worst-case rounding of
// fp32 products summed in 16 lanes and then pairwise, (n/16 + 6) * 2^-23 * sum_i |dequant_i * x_i|.
TEST(VecDot, MatchesDequantizedDotEveryType) {
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal;
  for (const Layout& l : layouts()) {
    std::vector<int64_t> lengths = {int64_t(l.block_size), 3 * int64_t(l.block_size), 4864};
    if (l.block_size == 1) lengths.insert(lengths.end(), {7, 17, 33, 896, 4867});
    if (l.block_size == 32) lengths.push_back(896);
    for (const int64_t n : lengths) {
      SCOPED_TRACE(std::string(qwen::type_name(l.type)) + " n=" + std::to_string(n));
      const std::vector<uint8_t> row = random_row(l, n, rng);
      std::vector<float> x(static_cast<size_t>(n)), deq(static_cast<size_t>(n));
      for (float& v : x) v = normal(rng);
      qwen::dequantize_row(l.type, row.data(), deq.data(), n);
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        ref += double(deq[i]) * double(x[i]);
        mag += std::fabs(double(deq[i]) * double(x[i]));
      }
      const float got = qwen::vec_dot(l.type, row.data(), x.data(), n);
      EXPECT_NEAR(double(got), ref, (double(n) / 16 + 6) * std::ldexp(1.0, -23) * mag);
      EXPECT_EQ(qwen::vec_dot_fn(l.type)(row.data(), x.data(), n), got);
      std::vector<float> deq2(static_cast<size_t>(n));
      qwen::dequantize_row_fn(l.type)(row.data(), deq2.data(), n);
      EXPECT_EQ(deq2, deq);
    }
  }
}

}  // namespace
