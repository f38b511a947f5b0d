// The CUDA weight decoders of src/backend/cuda/quant.cuh, run on the host (they are __host__
// __device__) against the CPU dequantizer, for every type: no GPU needed, so CI runs them. A
// wrong byte offset, nibble or scale index in a decoder shows here as the element it breaks.
//
// Metric: |decoded - dequantize_row| <= 1e-6 * max|dequantize_row| per element (the decoders and
// the CPU dequantizer compute the same products in fp32; this allows an operand order apart), on
// rows whose blocks start at every alignment the GPU sees (Q6_K's 210-byte and Q8_0's 34-byte
// blocks sit 2 bytes off 4-byte alignment every other block).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/quant.cuh"
#include "ops_test_util.h"

namespace qwen::test {
namespace {

using cuda::kChunk;

constexpr int64_t kRows = 3;
constexpr int64_t kCols = 1024;  // 4 super-blocks, 32 chunks

class QuantDecode : public ::testing::TestWithParam<GGMLType> {
 protected:
  void SetUp() override {
    std::mt19937 rng(7 + unsigned(GetParam()));
    w = random_weight(rng, GetParam(), kRows, kCols);
    ref.resize(size_t(kRows * kCols));
    const size_t rb = row_bytes(GetParam(), kCols);
    for (int64_t r = 0; r < kRows; ++r) dequantize_row(GetParam(), w.data() + r * rb, &ref[r * kCols], kCols);
    for (float v : ref) ref_max = std::max(ref_max, std::fabs(v));
    ASSERT_GT(ref_max, 0.f);
  }
  const uint8_t* row(int64_t r) const { return w.data() + r * row_bytes(GetParam(), kCols); }
  void expect_near(float got, int64_t r, int64_t e, const char* what, int64_t c) const {
    EXPECT_LE(std::fabs(got - ref[r * kCols + e]), 1e-6f * ref_max)
        << type_name(GetParam()) << " " << what << ": row " << r << " chunk " << c << " element " << e
        << ": decoded " << got << ", CPU " << ref[r * kCols + e];
  }
  std::vector<uint8_t> w;
  std::vector<float> ref;
  float ref_max = 0.f;
};

// dequant_chunk (embedding, dequantization to fp16 for the GEMMs, gemm_small's tiles): chunk c is
// elements [32c, 32c + 32).
TEST_P(QuantDecode, ChunksEqualCpuDequantization) {
  cuda::dispatch_type(GetParam(), "test", [&]<GGMLType T>() {
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c = 0; c < kCols / kChunk; ++c) {
        float out[kChunk];
        cuda::dequant_chunk<T>(row(r), c, out);
        for (int k = 0; k < kChunk; ++k) expect_near(out[k], r, kChunk * c + k, "dequant_chunk", c);
      }
    }
  });
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantDecode,
                         ::testing::Values(GGMLType::F32, GGMLType::F16, GGMLType::BF16, GGMLType::Q8_0,
                                           GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0, GGMLType::Q5_1,
                                           GGMLType::Q2_K, GGMLType::Q3_K, GGMLType::Q4_K, GGMLType::Q5_K,
                                           GGMLType::Q6_K),
                         [](const ::testing::TestParamInfo<GGMLType>& i) {
                           return std::string(type_name(i.param));
                         });

}  // namespace
}  // namespace qwen::test
