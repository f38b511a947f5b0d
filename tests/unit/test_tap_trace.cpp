// runtime/tap_trace.h, the verdict qwen-diff prints and tests/ops/test_tap_fault.cpp relies on:
// a trace keys tensors by layer and name in forward order, appends the rows of later forward
// calls and keeps each distinct writing kernel once; first_divergence names the first tensor of
// the reference that the other trace lacks, has in another shape, or whose NMSE exceeds the
// tolerance. Synthetic traces, no model; every check exact (a doubled row 0 gives NMSE = its
// share of the tensor's sum of squares, here 10 / 60).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/tap_trace.h"

namespace qwen {
namespace {

// One forward call's taps: three tensors of 2 rows x 4 columns, `kernel` writing Qcur.
void forward(TapTrace& t, const std::vector<float>& q, const char* kernel) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6, 7, 8};
  t.add(Tapped{"inp_embd", -1, a.data(), 2, 4, "embed"});
  t.add(Tapped{"Qcur", 0, q.data(), 2, 4, kernel});
  t.add(Tapped{"l_out", 0, a.data(), 2, 4, "gemv[resid]"});
}

const std::vector<float> kQ = {1, -1, 2, -2, 3, -3, 4, -4};

TEST(TapTrace, KeysRowsAndKernels) {
  TapTrace t;
  forward(t, kQ, "gemm");
  forward(t, kQ, "gemv_group[qkv]");
  forward(t, kQ, "gemv_group[qkv]");
  ASSERT_EQ(t.tensors.size(), 3u);
  EXPECT_EQ(t.tensors[0].key, "inp_embd");
  EXPECT_EQ(t.tensors[1].key, "L00.Qcur");
  EXPECT_EQ(t.tensors[2].key, "L00.l_out");
  const TapTensor* q = t.find("L00.Qcur");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->data.size(), 3u * 8u);  // three calls of 2 x 4
  EXPECT_EQ(q->kernel, "gemm/gemv_group[qkv]");
  EXPECT_EQ(t.find("Qcur"), nullptr);
}

TEST(TapTrace, FirstDivergence) {
  TapTrace ref, same, wrong, missing;
  forward(ref, kQ, "cpu");
  forward(same, kQ, "gemv_group[qkv]");
  EXPECT_EQ(first_divergence(ref, same, 0.0), nullptr);

  std::vector<float> q = kQ;
  for (int i = 0; i < 4; ++i) q[i] *= 2;  // token 0's row doubled, as CudaOptions::plant_fault does
  forward(wrong, q, "gemv_group[qkv]");
  const TapTensor* first = first_divergence(ref, wrong, 1e-5);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->key, "L00.Qcur");
  const TapDiff d = compare(*first, *wrong.find("L00.Qcur"));
  // Row 0's sum of squares is 10 of the tensor's 10 + 50: NMSE = 10 / 60.
  EXPECT_DOUBLE_EQ(d.nmse, 10.0 / 60.0);
  EXPECT_EQ(d.worst_row, 0);
  EXPECT_DOUBLE_EQ(d.max_abs, 2.0);
  EXPECT_TRUE(d.diverges(0.1));
  EXPECT_FALSE(d.diverges(0.2));

  const std::vector<float> a = {1, 2, 3, 4, 5, 6, 7, 8};
  missing.add(Tapped{"inp_embd", -1, a.data(), 2, 4, "embed"});
  first = first_divergence(ref, missing, 1e-5);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->key, "L00.Qcur");  // absent: a divergence, not skipped
}

}  // namespace
}  // namespace qwen
