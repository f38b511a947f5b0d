// CUDA RMSNorm, RoPE, SwiGLU, add and argmax vs the CPU backend.
// Bounds: RMSNorm (fp32 sum of squares vs the CPU's fp64): NMSE <= 1e-12, max|d| <= 1e-5 max|ref|.
// RoPE (both compute angles in fp64 from the same fp32 frequency table, rotate in fp32): max|d| <= 1e-5
// at positions up to 131,071, unscaled and with linear, YaRN (mscale != 1) and llama3 rope_freqs.
// SwiGLU (expf on both sides): NMSE <= 1e-12. Add: exact. Argmax: exact, ties to the lowest index.
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

#include "model/config.h"
#include "ops_test_util.h"

namespace qwen::test {
namespace {

class ElementwiseParity : public testing::Test {
 protected:
  void SetUp() override { QWEN_REQUIRE_GPU(); }
};

TEST_F(ElementwiseParity, RmsNorm) {
  Pair be;
  std::mt19937 rng(1);
  struct Case {
    int64_t rows;
    int n;
  };
  // Whole rows (896, 4864, 1024) and per-head rows (qwen3 q/k norm: head_dim 64 and 128).
  for (const Case c :
       {Case{7, 896}, Case{5, 4864}, Case{3, 1024}, Case{14 * 9, 64}, Case{16 * 5, 128}, Case{1, 32}}) {
    SCOPED_TRACE(testing::Message() << c.rows << " rows x " << c.n);
    // Large-magnitude rows as in Qwen2's residual stream.
    Mirror x(be, random_floats(rng, size_t(c.rows) * c.n, -300.f, 300.f));
    Mirror w(be, random_floats(rng, size_t(c.n), 0.5f, 2.f));
    Mirror out(be, size_t(c.rows) * c.n * sizeof(float));
    be.cpu->rmsnorm(out.cpu<float>(), x.cpu<float>(), w.cpu<float>(), c.rows, c.n, 1e-6f);
    be.gpu->rmsnorm(out.gpu<float>(), x.gpu<float>(), w.gpu<float>(), c.rows, c.n, 1e-6f);
    const auto ref = out.cpu_host<float>(), got = out.gpu_host<float>();
    const Diff d = compare(got.data(), ref.data(), ref.size());
    EXPECT_LE(d.nmse, 1e-12) << describe(d);
    EXPECT_LE(d.max_abs, 1e-5 * d.ref_max) << describe(d);
    // In place (out == x), as the qwen3 per-head norm is called.
    be.gpu->rmsnorm(x.gpu<float>(), x.gpu<float>(), w.gpu<float>(), c.rows, c.n, 1e-6f);
    const auto inplace = x.gpu_host<float>();
    const Diff di = compare(inplace.data(), ref.data(), ref.size());
    EXPECT_LE(di.nmse, 1e-12) << "in place: " << describe(di);
  }
}

TEST_F(ElementwiseParity, Rope) {
  Pair be;
  std::mt19937 rng(2);
  struct Case {
    int n_head, head_dim;
    float base;
    RopeMode mode;
    RopeScaling scaling;
    bool llama3;  // per-pair rope_freqs divisors (llama3's 1 / 8 / smooth ramp)
  };
  const RopeScaling none, linear{RopeScalingType::Linear, 2.f, 32768},
      yarn{RopeScalingType::Yarn, 4.f, 32768}, yarn_attn{RopeScalingType::Yarn, 8.f, 16384, 0.9f, 16.f, 2.f};
  for (const Case c :
       {Case{14, 64, 1e6f, RopeMode::Neox, none, false}, Case{2, 64, 1e6f, RopeMode::Neox, none, false},
        Case{16, 128, 1e6f, RopeMode::Neox, none, false}, Case{8, 128, 5e5f, RopeMode::Normal, none, false},
        Case{4, 256, 1e4f, RopeMode::Normal, none, false}, Case{14, 64, 1e6f, RopeMode::Neox, yarn, false},
        Case{8, 128, 1e6f, RopeMode::Neox, yarn_attn, false},
        Case{4, 64, 1e4f, RopeMode::Normal, linear, false},
        Case{8, 128, 5e5f, RopeMode::Normal, none, true}}) {
    SCOPED_TRACE(testing::Message() << c.n_head << " heads x " << c.head_dim
                                    << (c.mode == RopeMode::Neox ? " neox, " : " normal, ")
                                    << rope_scaling_name(c.scaling.type)
                                    << (c.llama3 ? " + rope_freqs" : ""));
    ModelConfig mc;
    mc.head_dim = c.head_dim;
    mc.rope_freq_base = c.base;
    mc.rope_scaling = c.scaling;
    std::vector<float> factors;
    for (int i = 0; c.llama3 && i < c.head_dim / 2; ++i) {
      factors.push_back(i < c.head_dim / 8 ? 1.f : i >= c.head_dim / 4 ? 8.f : 1.f + 7.f * (i % 8) / 8.f);
    }
    Mirror table(be, rope_inv_freq(mc, factors));
    const float mscale = rope_mscale(mc);
    std::vector<int32_t> pos = {0, 1, 2, 17, 511, 4095, 32767, 40000, 131071};
    for (int i = 0; i < 9; ++i) pos.push_back(int32_t(rng() % 131072));
    const int n = int(pos.size());
    Mirror p(be, pos);
    Mirror x(be, random_floats(rng, size_t(n) * c.n_head * c.head_dim, -4.f, 4.f));
    be.cpu->rope(x.cpu<float>(), p.cpu<int32_t>(), n, c.n_head, c.head_dim,
                 RopeParams{table.cpu<float>(), mscale, c.mode});
    be.gpu->rope(x.gpu<float>(), p.gpu<int32_t>(), n, c.n_head, c.head_dim,
                 RopeParams{table.gpu<float>(), mscale, c.mode});
    const auto ref = x.cpu_host<float>(), got = x.gpu_host<float>();
    const Diff d = compare(got.data(), ref.data(), ref.size());
    EXPECT_EQ(d.n_nonfinite, 0);
    EXPECT_LE(d.max_abs, 1e-5) << describe(d);
  }
}

TEST_F(ElementwiseParity, SwiGluAndAdd) {
  Pair be;
  std::mt19937 rng(3);
  for (int64_t n : {int64_t(4864), int64_t(4864) * 37 + 5}) {
    Mirror g(be, random_floats(rng, size_t(n), -20.f, 20.f));
    Mirror u(be, random_floats(rng, size_t(n), -5.f, 5.f));
    Mirror out(be, size_t(n) * sizeof(float));
    be.cpu->swiglu(out.cpu<float>(), g.cpu<float>(), u.cpu<float>(), n);
    be.gpu->swiglu(out.gpu<float>(), g.gpu<float>(), u.gpu<float>(), n);
    auto ref = out.cpu_host<float>(), got = out.gpu_host<float>();
    Diff d = compare(got.data(), ref.data(), ref.size());
    EXPECT_LE(d.nmse, 1e-12) << "swiglu n=" << n << ": " << describe(d);
    // add, aliased as the residual update x = x + cur
    be.cpu->add(g.cpu<float>(), g.cpu<float>(), u.cpu<float>(), n);
    be.gpu->add(g.gpu<float>(), g.gpu<float>(), u.gpu<float>(), n);
    ref = g.cpu_host<float>(), got = g.gpu_host<float>();
    d = compare(got.data(), ref.data(), ref.size());
    EXPECT_EQ(d.max_abs, 0.0) << "add n=" << n << ": " << describe(d);
  }
}

TEST_F(ElementwiseParity, Argmax) {
  Pair be;
  std::mt19937 rng(4);
  const int n_rows = 6, n = 151936;
  std::vector<float> x = random_floats(rng, size_t(n_rows) * n, -10.f, 10.f);
  // Row 1: a tie between two far-apart maxima (lowest index wins). Row 2: max at the last index.
  // Row 3: all equal. Row 4: max at index 0.
  x[size_t(1) * n + 100] = 50.f;
  x[size_t(1) * n + 150000] = 50.f;
  x[size_t(2) * n + n - 1] = 60.f;
  std::fill(x.begin() + 3 * n, x.begin() + 4 * n, 1.5f);
  x[size_t(4) * n] = 70.f;
  Mirror xs(be, x);
  Mirror out(be, size_t(n_rows) * sizeof(int32_t));
  be.cpu->argmax(out.cpu<int32_t>(), xs.cpu<float>(), n_rows, n);
  be.gpu->argmax(out.gpu<int32_t>(), xs.gpu<float>(), n_rows, n);
  const auto ref = out.cpu_host<int32_t>(), got = out.gpu_host<int32_t>();
  EXPECT_EQ(got, ref);
  EXPECT_EQ(got[1], 100);
  EXPECT_EQ(got[2], n - 1);
  EXPECT_EQ(got[3], 0);
  EXPECT_EQ(got[4], 0);
}

}  // namespace
}  // namespace qwen::test
