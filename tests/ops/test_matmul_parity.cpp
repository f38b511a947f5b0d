// CUDA matmul (decode GEMV, the few-token tensor-core GEMM of batched decode, prefill cuBLAS GEMM)
// and embedding vs the CPU backend, for every
// weight type on the real matrix shapes of Qwen2.5-0.5B (896, 128 = 2 kv heads x 64, 4864,
// 151936 rows) and on k-quant-compatible widths (multiples of 256).
//
// Bounds (stated per path):
//  - GEMV (n_tokens <= 4): both sides dequantize exactly and accumulate in fp32, only the order
//    differs: NMSE <= 1e-10, max|d| <= 1e-5 * max|ref|.
//  - GEMM (n_tokens > 4: gemm_small up to 64 tokens, cuBLAS above; both round weights and split
//    activations the same way), F32 (SGEMM at every count): NMSE <= 1e-10.  F16: activations split into two
//    fp16 halves (~22 bits): NMSE <= 1e-9.  BF16: two bf16 halves (~16 bits): NMSE <= 1e-8.  Quantized:
//    weight rounded to fp16 once (2^-11 relative): NMSE <= 1e-6.  Max|d| <= 1e-2 * max|ref| for the GEMM.
//  - Fast mode's GEMMs (gemm_small and cuBLAS): F16 and quantized weights take x rounded to
//    fp16 once (2^-12 relative, the order of the quantized weights' own rounding): NMSE <= 2e-6;
//    BF16 and F32 as above (two passes / SGEMM in either mode).
//  - Per output row (every row of the lm_head is checked): the row's mean squared error over the
//    whole output's mean square <= 100x the bound above, so one garbage row among 151,936
//    cannot hide in a global average.
//  - Embedding: exact dequantization on both sides: max|d| <= 1e-6 * max|ref|.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "ops_test_util.h"

namespace qwen::test {
namespace {

const GGMLType kAllTypes[] = {GGMLType::F32,  GGMLType::F16,  GGMLType::BF16, GGMLType::Q8_0, GGMLType::Q4_0,
                              GGMLType::Q4_1, GGMLType::Q5_0, GGMLType::Q5_1, GGMLType::Q2_K, GGMLType::Q3_K,
                              GGMLType::Q4_K, GGMLType::Q5_K, GGMLType::Q6_K};

bool is_kquant(GGMLType t) {
  return type_traits(t).block_size == 256;
}

// cuda::has_unit_dot types: x quantized to 16 bits per 32 elements (NMSE 1.5-3.8e-10 on the host in
// test_quant_dot.cu).
double nmse_bound(GGMLType t, bool gemm, bool fast) {
  if (!gemm) return fast && cuda::has_unit_dot(t) ? 2e-9 : 1e-10;
  if (fast && t != GGMLType::F32 && t != GGMLType::BF16) return 2e-6;
  switch (t) {
    case GGMLType::F32:
      return 1e-10;
    case GGMLType::F16:
      return 1e-9;
    case GGMLType::BF16:
      return 1e-8;
    default:
      return 1e-6;
  }
}

struct Shape {
  int64_t rows, cols;  // ne1 (outputs), ne0 (inputs)
};

void check_matmul(Pair& be, std::mt19937& rng, GGMLType t, Shape s, int n_tokens, bool bias,
                  bool fast = false) {
  SCOPED_TRACE(testing::Message() << type_name(t) << " W[" << s.rows << "][" << s.cols << "] x " << n_tokens
                                  << " tokens" << (bias ? " +bias" : ""));
  const std::vector<uint8_t> w_host = random_weight(rng, t, s.rows, s.cols);
  Mirror w(be, w_host);
  Mirror x(be, random_floats(rng, size_t(n_tokens) * s.cols));
  std::unique_ptr<Mirror> b;
  if (bias) b = std::make_unique<Mirror>(be, random_floats(rng, size_t(s.rows)));
  Mirror y(be, size_t(n_tokens) * s.rows * sizeof(float));
  const std::vector<float> poison(size_t(n_tokens) * s.rows, std::nanf(""));
  y.upload(poison.data());  // every output element must be written
  Weight wc{t, s.cols, s.rows, w.cpu<void>()}, wg{t, s.cols, s.rows, w.gpu<void>()};
  be.cpu->matmul(y.cpu<float>(), wc, x.cpu<float>(), n_tokens, b ? b->cpu<float>() : nullptr);
  be.gpu->matmul(y.gpu<float>(), wg, x.gpu<float>(), n_tokens, b ? b->gpu<float>() : nullptr);
  const auto ref = y.cpu_host<float>(), got = y.gpu_host<float>();
  const bool gemm = n_tokens > 4;
  const double bound = nmse_bound(t, gemm, fast);
  const Diff d = compare(got.data(), ref.data(), ref.size());
  EXPECT_EQ(d.n_nonfinite, 0) << describe(d);
  EXPECT_LE(d.nmse, bound) << describe(d);
  EXPECT_LE(d.max_abs, (gemm ? 1e-2 : (fast && cuda::has_unit_dot(t) ? 1e-4 : 1e-5)) * d.ref_max)
      << describe(d);
  // Row by row: the scattered-garbage-row failure. A row's mean squared error is measured
  // against the whole output's mean square (a single row's own value may cancel to ~0).
  double ms_ref = 0;
  for (float v : ref) ms_ref += double(v) * v;
  ms_ref /= double(ref.size());
  int64_t bad_rows = 0, first_bad = -1;
  for (int64_t r = 0; r < s.rows; ++r) {
    double num = 0;
    for (int tk = 0; tk < n_tokens; ++tk) {
      const double e = double(got[tk * s.rows + r]) - ref[tk * s.rows + r];
      num += e * e;
    }
    if (!(num / n_tokens <= 100 * bound * ms_ref)) {
      if (first_bad < 0) first_bad = r;
      ++bad_rows;
    }
  }
  EXPECT_EQ(bad_rows, 0) << "rows above 100x the NMSE bound, first at row " << first_bad;
}

class MatmulParity : public testing::TestWithParam<GGMLType> {
 protected:
  void SetUp() override { QWEN_REQUIRE_GPU(); }
};

// The layer shapes of Qwen2.5-0.5B (q/o 896x896, k/v 128x896, gate/up 4864x896, down 896x4864);
// k-quants need rows of a multiple of 256, so they take 1024 where the model has 896.
TEST_P(MatmulParity, LayerShapes) {
  const GGMLType t = GetParam();
  Pair be;
  std::mt19937 rng(1234 + int(t));
  const int64_t e = is_kquant(t) ? 1024 : 896;
  const Shape shapes[] = {{e, e}, {128, e}, {4864, e}, {e, 4864}};
  for (const Shape& s : shapes) {
    // 5..64: every token-tile width of gemm_small (8, 16, 32, 64), partly filled; 65: cuBLAS.
    for (int n_tokens : {1, 2, 4, 5, 8, 17, 40, 64, 65})
      check_matmul(be, rng, t, s, n_tokens, /*bias=*/s.rows == 128);
  }
}

// Ragged shapes for gemm_small: rows not a multiple of its 64-row blocks, and (legacy types)
// an odd number of 32-element chunks per row, so the last 64-column slice holds one chunk; exact,
// and fast at 6 and 13 tokens (Q8_0 and Q4_0: integer fragments, whose last slice reads its
// missing block as zeros). And for the GEMV: 9,001 rows give a grid large enough for several rows
// per warp (up to 4: blocks of 32 rows, the last holding 9), at 1 and 2 tokens.
TEST_P(MatmulParity, RaggedShapes) {
  const GGMLType t = GetParam();
  Pair be;
  std::mt19937 rng(555 + int(t));
  const int64_t cols = is_kquant(t) ? 768 : 864;
  for (int n_tokens : {3, 6, 33}) check_matmul(be, rng, t, Shape{201, cols}, n_tokens, /*bias=*/true);
  for (int n_tokens : {1, 2}) check_matmul(be, rng, t, Shape{9001, cols}, n_tokens, /*bias=*/true);
  Pair fast(/*gpu_exact=*/false);
  for (int n_tokens : {6, 13})
    check_matmul(fast, rng, t, Shape{201, cols}, n_tokens, /*bias=*/true, /*fast=*/true);
}

// The lm_head: 151,936 rows, every row compared: decode (GEMV) and gemm_small's 128-row blocks
// at 16 and 64 tokens, exact and fast (the only 8-warp blocks of these tests, so the integer
// fragments' 8-warp kernels run here, at 16 tokens).
TEST_P(MatmulParity, LmHead) {
  const GGMLType t = GetParam();
  Pair be;
  std::mt19937 rng(99 + int(t));
  const Shape s{151936, is_kquant(t) ? 1024 : 896};
  for (int n_tokens : {1, 16, 64}) check_matmul(be, rng, t, s, n_tokens, false);
  Pair fast(/*gpu_exact=*/false);
  for (int n_tokens : {16, 64}) check_matmul(fast, rng, t, s, n_tokens, false, /*fast=*/true);
}

// gemm_small with x split once per launch (presplit_x: 6 MiB of weights or more, and x's fp32
// bytes per 64-row block at least 1.5 times its weights', or two passes) and without, in 4-warp
// blocks with K splits: a 4864 x 4864 matrix at 17 and 64 tokens, exact (always presplit) and
// fast (at 17 tokens only the 4-5-bit types, at 64 all).
TEST_P(MatmulParity, PresplitShapes) {
  const GGMLType t = GetParam();
  std::mt19937 rng(777 + int(t));
  for (const bool fast : {false, true}) {
    Pair be(/*gpu_exact=*/!fast);
    for (int n_tokens : {17, 64}) check_matmul(be, rng, t, Shape{4864, 4864}, n_tokens, /*bias=*/true, fast);
  }
}

// Fast mode (the apps' default): one fp16 pass of x through gemm_small (8, 13, 17, 40 tokens;
// the integer fragments of Q6_K, Q8_0 and Q4_0 at 8 and 13) and cuBLAS (65, 300), on the layer
// shapes.
TEST_P(MatmulParity, FastPrefill) {
  const GGMLType t = GetParam();
  Pair be(/*gpu_exact=*/false);
  std::mt19937 rng(4321 + int(t));
  const int64_t e = is_kquant(t) ? 1024 : 896;
  const Shape shapes[] = {{e, e}, {4864, e}, {e, 4864}};
  for (const Shape& s : shapes) {
    for (int n_tokens : {8, 13, 17, 40, 65, 300})
      check_matmul(be, rng, t, s, n_tokens, /*bias=*/true, /*fast=*/true);
  }
}

// Fast mode's decode GEMV (1, 2 and 4 tokens): the layer shapes, 9,001 rows (several rows per
// warp, the last block partly filled) and the lm_head's 151,936 rows. The integer-dot GEMV takes
// the launches of 2,048 rows or more (4,864, 9,001 and 151,936 here), the fp32 GEMV the others;
// Q8_0 takes it from 16 MiB of weights only, so it also runs 18,944 rows (18 MiB).
TEST_P(MatmulParity, FastDecode) {
  const GGMLType t = GetParam();
  Pair be(/*gpu_exact=*/false);
  std::mt19937 rng(2468 + int(t));
  const int64_t e = is_kquant(t) ? 1024 : 896;
  std::vector<Shape> shapes = {{e, e}, {128, e}, {4864, e}, {e, 4864}, {9001, e}};
  if (t == GGMLType::Q8_0) shapes.push_back({18944, e});
  for (const Shape& s : shapes) {
    for (int n_tokens : {1, 2, 4}) check_matmul(be, rng, t, s, n_tokens, /*bias=*/true, /*fast=*/true);
  }
  check_matmul(be, rng, t, Shape{151936, e}, 1, /*bias=*/false, /*fast=*/true);
}

// Embedding lookup of every type: first, last and random rows of a 151,936-row table.
TEST_P(MatmulParity, Embedding) {
  const GGMLType t = GetParam();
  Pair be;
  std::mt19937 rng(7 + int(t));
  const int64_t n_vocab = 151936, n_embd = is_kquant(t) ? 1024 : 896;
  Mirror table(be, random_weight(rng, t, n_vocab, n_embd));
  std::vector<int32_t> ids = {0, int32_t(n_vocab - 1), 1, 151643};
  for (int i = 0; i < 60; ++i) ids.push_back(int32_t(rng() % n_vocab));
  Mirror id(be, ids);
  const int n = int(ids.size());
  Mirror out(be, size_t(n) * n_embd * sizeof(float));
  be.cpu->embed(out.cpu<float>(), Weight{t, n_embd, n_vocab, table.cpu<void>()}, id.cpu<int32_t>(), n);
  be.gpu->embed(out.gpu<float>(), Weight{t, n_embd, n_vocab, table.gpu<void>()}, id.gpu<int32_t>(), n);
  const auto ref = out.cpu_host<float>(), got = out.gpu_host<float>();
  const Diff d = compare(got.data(), ref.data(), ref.size());
  EXPECT_EQ(d.n_nonfinite, 0) << describe(d);
  EXPECT_LE(d.max_abs, 1e-6 * d.ref_max) << type_name(t) << ": " << describe(d);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatmulParity, testing::ValuesIn(kAllTypes),
                         [](const testing::TestParamInfo<GGMLType>& i) {
                           return std::string(type_name(i.param));
                         });

}  // namespace
}  // namespace qwen::test
