// gemm_small's Q6_K, Q8_0 and Q4_0 fragments (src/backend/cuda/quant_mma.cuh), run on the host
// (they are __host__ __device__): the A tiles that the 32 lanes of a warp hold, rebuilt from their
// fragments by the PTX layout of mma.m16n8k16 (thread (g, q): a0 row g, columns 2q and 2q + 1;
// a1 row g + 8; a2 and a3 the same rows at columns 2q + 8, 2q + 9), multiplied by an x tile staged
// through x_col() as the kernel stages it, and scaled per sub-block as the kernel does. No GPU
// needed, so CI runs it; tests/ops/test_matmul_parity.cpp checks the kernel on the GPU.
//
// Metrics:
//  - x_col() is a permutation of a slice's 64 columns that keeps each sub-block's elements (16
//    for Q6_K, 32 for Q8_0 and Q4_0) in its own columns (exact);
//  - every A element is an integer quant of the row (Q6_K -32..31, Q8_0 -128..127, Q4_0 -8..7;
//    exact), and every lane of a row decodes the same scales;
//  - the rebuilt product of a 16-row x 8-token tile over 512 columns (and, Q8_0 and Q4_0, 480:
//    the last slice holds one block, the other is read as zeros) equals sum(dequant(w) x16) in
//    double within 1e-6 * sum|w x16| (x16: x rounded to fp16, as the kernel multiplies it).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/quant_mma.cuh"
#include "ops_test_util.h"

namespace qwen::test {
namespace {

constexpr int kTileRows = 16, kTokens = 8;

float h2f(uint32_t bits) {
  return cuda::half_to_float(uint16_t(bits & 0xffffu));
}

template <GGMLType T>
void check_columns() {
  using S = cuda::IntSlice<T>;
  constexpr int kSubCols = 16 * S::kSteps;
  std::vector<int> seen(64, 0);
  for (int p = 0; p < 64; ++p) {
    const int c = S::x_col(p);
    ASSERT_GE(c, 0);
    ASSERT_LT(c, 64);
    EXPECT_EQ(c / kSubCols, p / kSubCols) << type_name(T) << ": element " << p << " left its sub-block";
    ++seen[c];
  }
  for (int c = 0; c < 64; ++c) EXPECT_EQ(seen[c], 1) << type_name(T) << ": column " << c;
  // The kernel stores elements p and p + 2 (p % 4 == 0) as one pair of columns, p + 1 and p + 3
  // as the pair 8 columns on.
  for (int p = 0; p < 64; p += 4) {
    EXPECT_EQ(S::x_col(p) % 2, 0);
    EXPECT_EQ(S::x_col(p + 2), S::x_col(p) + 1);
    EXPECT_EQ(S::x_col(p + 1), S::x_col(p) + 8);
    EXPECT_EQ(S::x_col(p + 3), S::x_col(p) + 9);
  }
}

// The quants that a row's A elements may hold: Q6_K -32..31, Q8_0 -128..127, Q4_0 -8..7.
template <GGMLType T>
bool is_quant(float v) {
  const float hi = T == GGMLType::Q6_K ? 31.f : (T == GGMLType::Q8_0 ? 127.f : 7.f);
  return v >= -hi - 1.f && v <= hi && v == std::floor(v);
}

template <GGMLType T>
void check_product(int64_t cols) {
  SCOPED_TRACE(testing::Message() << type_name(T) << ", " << cols << " columns");
  using S = cuda::IntSlice<T>;
  constexpr int kSubCols = 16 * S::kSteps;
  std::mt19937 rng(17 + unsigned(T));
  const std::vector<uint8_t> w = random_weight(rng, T, kTileRows, cols);
  const size_t rb = row_bytes(T, cols);
  std::vector<float> x16(size_t(kTokens) * cols);
  for (float& v : x16)
    v = __half2float(__float2half_rn(std::uniform_real_distribution<float>(-2.f, 2.f)(rng)));

  std::vector<double> got(size_t(kTileRows) * kTokens, 0.0);
  for (int64_t s = 0; s < (cols / 32 + 1) / 2; ++s) {
    // The tile of each sub-block as the lanes hold it, a[sb][row][column], and the scales.
    float a[S::kSubs][kTileRows][kSubCols] = {};
    float fs[S::kSubs][kTileRows] = {};
    for (int lane = 0; lane < 32; ++lane) {
      const int g = lane / 4, q = lane % 4;
      S raw;
      raw.load(w.data() + g * rb, w.data() + (g + 8) * rb, s, q, cols / 32);
      float lfs[S::kSubs][2] = {};
      raw.scales(lfs);
      for (int sb = 0; sb < S::kSubs; ++sb) {
        for (int r = 0; r < 2; ++r) {
          if (q == 0) {
            fs[sb][g + 8 * r] = lfs[sb][r];
          } else {
            EXPECT_EQ(lfs[sb][r], fs[sb][g + 8 * r]);
          }
        }
        for (int kk = 0; kk < S::kSteps; ++kk) {
          uint32_t f[4];
          raw.frag(sb, kk, f);
          for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i % 2), col = 16 * kk + 2 * q + 8 * (i / 2);
            a[sb][row][col] = h2f(f[i]);
            a[sb][row][col + 1] = h2f(f[i] >> 16);
          }
        }
      }
    }
    for (int sb = 0; sb < S::kSubs; ++sb) {
      const bool past_end = 64 * s + kSubCols * sb >= cols;  // read as zeros, not past the row
      for (int row = 0; row < kTileRows; ++row) {
        if (past_end) EXPECT_EQ(fs[sb][row], 0.f) << "slice " << s << " row " << row;
        for (int c = 0; c < kSubCols; ++c) {
          EXPECT_TRUE(is_quant<T>(a[sb][row][c])) << "slice " << s << " row " << row << ": " << a[sb][row][c];
          if (past_end) EXPECT_EQ(a[sb][row][c], 0.f) << "slice " << s << " row " << row;
        }
      }
    }
    // x staged by column (zeros past the row's end, as the kernel loads it), then per sub-block
    // T = sum(q x).
    for (int tok = 0; tok < kTokens; ++tok) {
      float xt[64];
      for (int p = 0; p < 64; ++p)
        xt[S::x_col(p)] = 64 * s + p < cols ? x16[size_t(tok) * cols + 64 * s + p] : 0.f;
      for (int sb = 0; sb < S::kSubs; ++sb) {
        for (int row = 0; row < kTileRows; ++row) {
          double tt = 0;
          for (int c = 0; c < kSubCols; ++c) tt += double(a[sb][row][c]) * xt[kSubCols * sb + c];
          got[size_t(row) * kTokens + tok] += double(fs[sb][row]) * tt;
        }
      }
    }
  }

  std::vector<float> wr(cols);
  for (int row = 0; row < kTileRows; ++row) {
    dequantize_row(T, w.data() + row * rb, wr.data(), cols);
    for (int tok = 0; tok < kTokens; ++tok) {
      double ref = 0, ref_abs = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const double p = double(wr[k]) * x16[size_t(tok) * cols + k];
        ref += p;
        ref_abs += std::fabs(p);
      }
      EXPECT_LE(std::fabs(got[size_t(row) * kTokens + tok] - ref), 1e-6 * ref_abs)
          << type_name(T) << " row " << row << " token " << tok << ": " << got[size_t(row) * kTokens + tok]
          << " vs " << ref;
    }
  }
}

TEST(QuantMma, ColumnsPermuteEachSubBlock) {
  check_columns<GGMLType::Q6_K>();
  check_columns<GGMLType::Q8_0>();
  check_columns<GGMLType::Q4_0>();
}

TEST(QuantMma, FragmentsRebuildTheProduct) {
  check_product<GGMLType::Q6_K>(512);
  for (int64_t cols : {512, 480}) {
    check_product<GGMLType::Q8_0>(cols);
    check_product<GGMLType::Q4_0>(cols);
  }
}

}  // namespace
}  // namespace qwen::test
