// The CUDA backend's decode fusions (GEMV -> residual add, rope + rope + kv_store, q/k/v in one
// GEMV, gate/up/SwiGLU in one GEMV, deep long-row GEMV; see backend_cuda.cu) vs the CPU backend on one
// Qwen2.5-0.5B-shaped layer (896 wide, FFN 4864, 14:2 heads of 64), every op issued back to back
// without downloads in between, so the fused kernels run; then every buffer the ops wrote is
// compared, as a tap would see it.
// Bounds: GEMV-path numerics, NMSE <= 1e-10 per buffer before the KV cache; the CPU's RMSNorm
// sums in fp64, so k and v may differ in the last fp32 bit and flip an fp16 rounding in the cache:
// caches NMSE <= 1e-7, attention and everything after it NMSE <= 1e-7. BF16 and Q8_0 caches
// (the fused rope + KV write quantizes one head per warp, llama's and qwen's rope pairings): the
// same last-bit differences in k and v may flip one bf16 rounding or one Q8_0 step
// (d = amax / 127) of a few elements, so caches and everything after attention NMSE <= 1e-5
// there.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "model/config.h"
#include "ops_test_util.h"

namespace qwen::test {
namespace {

struct Case {
  GGMLType type;
  int n_tokens;
  const char* fusions;  // CudaFusions::parse of the CUDA backend of this case
  GGMLType kv = GGMLType::F16;
  RopeMode mode = RopeMode::Neox;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << type_name(c.type) << " x " << c.n_tokens << " tokens, fusions " << c.fusions << ", "
      << type_name(c.kv) << " cache, " << (c.mode == RopeMode::Neox ? "neox" : "normal") << " rope";
}

class FusionParity : public testing::TestWithParam<Case> {
 protected:
  void SetUp() override { QWEN_REQUIRE_GPU(); }
};

TEST_P(FusionParity, DecodeLayer) {
  const Case c = GetParam();
  Pair be(CudaOptions{true, CudaFusions::parse(c.fusions)});
  std::mt19937 rng(21);
  const int n = c.n_tokens, E = 896, F = 4864, H = 14, HKV = 2, D = 64, ctx = 64;
  auto weight = [&](int64_t rows, int64_t cols) {
    return std::make_unique<Mirror>(be, random_weight(rng, c.type, rows, cols));
  };
  auto wq = weight(H * D, E), wk = weight(HKV * D, E), wv = weight(HKV * D, E), wo = weight(E, H * D);
  auto wg = weight(F, E), wu = weight(F, E), wd = weight(E, F);
  Mirror bq(be, random_floats(rng, H * D)), bk(be, random_floats(rng, HKV * D)),
      bv(be, random_floats(rng, HKV * D));
  Mirror n1(be, random_floats(rng, E, 0.5f, 1.5f)), n2(be, random_floats(rng, E, 0.5f, 1.5f));
  Mirror x(be, random_floats(rng, size_t(n) * E, -3.f, 3.f));
  Mirror cur(be, size_t(n) * E * 4), q(be, size_t(n) * H * D * 4), k(be, size_t(n) * HKV * D * 4),
      v(be, size_t(n) * HKV * D * 4), att(be, size_t(n) * H * D * 4), o(be, size_t(n) * E * 4),
      g(be, size_t(n) * F * 4), u(be, size_t(n) * F * 4);
  const size_t cache_bytes = size_t(ctx) * row_bytes(c.kv, HKV * D);
  Mirror kc(be, cache_bytes), vc(be, cache_bytes);
  const std::vector<uint8_t> zeros(cache_bytes, 0);
  kc.upload(zeros.data());
  vc.upload(zeros.data());
  // A YaRN rope (factor 4 over 32k positions), so the fused rope + KV write applies the table and
  // the mscale as the separate ops do.
  ModelConfig mc;
  mc.head_dim = D;
  mc.rope_freq_base = 1e6f;
  mc.rope_scaling = RopeScaling{RopeScalingType::Yarn, 4.f, 32768};
  Mirror rope_table(be, rope_inv_freq(mc, {}));
  std::vector<int32_t> pos(n), seq(n, 0), ids(n, 0);
  for (int i = 0; i < n; ++i) pos[i] = 10 + i;
  Mirror pd(be, pos), sd(be, seq), idd(be, ids);

  auto layer = [&](Backend& b, bool gpu) {
    auto P = [&](const Mirror& m) { return gpu ? m.gpu<float>() : m.cpu<float>(); };
    auto W = [&](const std::unique_ptr<Mirror>& m, int64_t rows, int64_t cols) {
      return Weight{c.type, cols, rows, gpu ? m->gpu<void>() : m->cpu<void>()};
    };
    KVLayer cache{gpu ? kc.gpu<void>() : kc.cpu<void>(),
                  gpu ? vc.gpu<void>() : vc.cpu<void>(),
                  c.kv,
                  1,
                  ctx,
                  HKV,
                  D};
    const Batch batch{n, gpu ? idd.gpu<int32_t>() : idd.cpu<int32_t>(),
                      gpu ? pd.gpu<int32_t>() : pd.cpu<int32_t>(),
                      gpu ? sd.gpu<int32_t>() : sd.cpu<int32_t>()};
    b.rmsnorm(P(cur), P(x), P(n1), n, E, 1e-6f);
    b.matmul(P(q), W(wq, H * D, E), P(cur), n, P(bq));
    b.matmul(P(k), W(wk, HKV * D, E), P(cur), n, P(bk));
    b.matmul(P(v), W(wv, HKV * D, E), P(cur), n, P(bv));
    const RopeParams rope{P(rope_table), rope_mscale(mc), c.mode};
    b.rope(P(q), batch.pos, n, H, D, rope);
    b.rope(P(k), batch.pos, n, HKV, D, rope);
    b.kv_store(cache, P(k), P(v), batch);
    b.attention(P(att), P(q), cache, batch, AttentionParams{H, HKV, D, 0.125f});
    b.matmul(P(o), W(wo, E, H * D), P(att), n, nullptr);
    b.add(P(x), P(x), P(o), int64_t(n) * E);
    b.rmsnorm(P(cur), P(x), P(n2), n, E, 1e-6f);
    b.matmul(P(g), W(wg, F, E), P(cur), n, nullptr);
    b.matmul(P(u), W(wu, F, E), P(cur), n, nullptr);
    b.swiglu(P(g), P(g), P(u), int64_t(n) * F);
    b.matmul(P(o), W(wd, E, F), P(g), n, nullptr);
    b.add(P(x), P(x), P(o), int64_t(n) * E);
    b.synchronize();
  };
  layer(*be.cpu, false);
  layer(*be.gpu, true);
  struct Named {
    const char* name;
    const Mirror* m;
    double bound;
  };
  const double after = c.kv == GGMLType::F16 ? 1e-7 : 1e-5;  // attention and after (see the top)
  for (const Named& b :
       {Named{"ffn_norm (cur)", &cur, after}, Named{"q", &q, 1e-10}, Named{"k", &k, 1e-10},
        Named{"v", &v, 1e-10}, Named{"attention", &att, after}, Named{"ffn_out (o)", &o, after},
        Named{"swiglu (g)", &g, after}, Named{"up", &u, after}, Named{"residual x", &x, after}}) {
    const auto ref = b.m->cpu_host<float>(), got = b.m->gpu_host<float>();
    const Diff d = compare(got.data(), ref.data(), ref.size());
    EXPECT_EQ(d.n_nonfinite, 0) << b.name;
    EXPECT_LE(d.nmse, b.bound) << b.name << ": " << describe(d);
  }
  for (const Mirror* m : {&kc, &vc}) {
    const auto a = m->cpu_host<uint8_t>(), b = m->gpu_host<uint8_t>();
    std::vector<float> fa(size_t(ctx) * HKV * D), fb(fa.size());
    dequantize_row(c.kv, a.data(), fa.data(), int64_t(fa.size()));
    dequantize_row(c.kv, b.data(), fb.data(), int64_t(fb.size()));
    const Diff d = compare(fb.data(), fa.data(), fa.size());
    EXPECT_LE(d.nmse, after) << (m == &kc ? "K" : "V") << " cache: " << describe(d);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Types, FusionParity,
    testing::Values(Case{GGMLType::F16, 1, "resid,rope"}, Case{GGMLType::Q8_0, 1, "resid,rope"},
                    Case{GGMLType::Q4_0, 1, "resid,rope"}, Case{GGMLType::BF16, 3, "resid,rope"},
                    Case{GGMLType::Q8_0, 4, "resid,rope"}, Case{GGMLType::Q8_0, 2, "0"},
                    Case{GGMLType::Q8_0, 1, "resid,rope,qkv,gateup,deep"},
                    Case{GGMLType::Q8_0, 4, "resid,rope,qkv,gateup,deep"},
                    Case{GGMLType::Q4_0, 1, "resid,rope,qkv,gateup,deep"},
                    Case{GGMLType::Q4_0, 4, "resid,rope,qkv,gateup,deep"},
                    Case{GGMLType::F16, 1, "resid,rope,qkv,gateup,deep"},
                    Case{GGMLType::F16, 4, "resid,rope,qkv,gateup,deep"}, Case{GGMLType::F32, 2, "qkv"},
                    Case{GGMLType::Q5_1, 1, "gateup"}, Case{GGMLType::Q5_1, 4, "qkv"},
                    Case{GGMLType::Q4_1, 1, "deep"}, Case{GGMLType::BF16, 3, "resid,rope,qkv,gateup,deep"},
                    // The default set: several rows per GEMV warp where the grid allows.
                    Case{GGMLType::Q8_0, 1, "resid,rope,qkv,gateup,deep,rows"},
                    Case{GGMLType::Q4_0, 4, "resid,rope,qkv,gateup,deep,rows"},
                    Case{GGMLType::F16, 1, "resid,rope,qkv,gateup,deep,rows"},
                    // KV cache types: the fused rope + KV write (neox and normal pairing), and the
                    // separate rope and kv_store ("0").
                    Case{GGMLType::Q8_0, 1, "resid,rope,qkv,gateup,deep,rows", GGMLType::Q8_0},
                    Case{GGMLType::Q8_0, 4, "rope", GGMLType::Q8_0, RopeMode::Normal},
                    Case{GGMLType::Q8_0, 3, "0", GGMLType::Q8_0},
                    Case{GGMLType::Q8_0, 1, "resid,rope,qkv,gateup,deep,rows", GGMLType::BF16},
                    Case{GGMLType::F16, 2, "rope", GGMLType::BF16, RopeMode::Normal},
                    Case{GGMLType::F16, 1, "0", GGMLType::BF16}),
    [](const testing::TestParamInfo<Case>& i) {
      std::string f = i.param.fusions;
      for (char& ch : f) ch = ch == ',' ? '_' : ch;
      std::string kv = i.param.kv == GGMLType::F16 ? "" : std::string("_kv_") + type_name(i.param.kv);
      if (i.param.mode == RopeMode::Normal) kv += "_normal";
      return std::string(type_name(i.param.type)) + "_" + std::to_string(i.param.n_tokens) + "tok_fuse_" + f +
             kv;
    });

}  // namespace
}  // namespace qwen::test
