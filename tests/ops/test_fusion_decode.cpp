// The decode fusions that cut launches per layer (backend_cuda.cu, matmul.cu):
//   qkv    - matmuls reading the same x with the same weight type: one grouped GEMV launch;
//   gateup - matmul(gate); matmul(up); swiglu(out, gate, up): one GEMV computing both rows;
//   deep   - long-row GEMVs (the FFN down matrix) with 4 chunks per lane in flight;
//   rows   - (not a fusion) up to 4 rows per GEMV warp where the grid stays large enough (the
//            default set has it; "qkv,rows" and "gateup,rows" take it with one fusion each).
// Every weight type on the Qwen2.5-0.5B shapes (896 wide, k/v 128 rows, FFN 4864; k-quants take
// 1024 where the model has 896, as in test_matmul_parity), 1 and 4 tokens (GEMV), 8 and 40
// tokens (gemm_small: q/k/v or gate/up grouped into one launch, the residual add as its
// epilogue). The same ops and bytes run on three backends: the CPU, CUDA with the fusions under test, CUDA
// with CudaFusions::none() (the unfused oracle); every buffer the ops write is compared. Bounds:
//  - vs the CPU: the GEMV path's (both sides dequantize exactly, accumulate in fp32, order
//    differs): NMSE <= 1e-10 and max|d| <= 1e-5 * max|ref| per buffer, also for the SwiGLU,
//    down-projection and residual outputs downstream (expf differs by an ulp or two at most);
//    at 8 and 40 tokens gemm_small's (vs_cpu_bound: NMSE <= 1e-5 quantized, 1e-8 F16, 1e-7 BF16).
//  - in fast mode (1 and 4 tokens: the GEMV of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q5_K with
//    x quantized to 16 bits in launches of 2,048 rows or more, here gate and up), vs the CPU
//    NMSE <= 5e-9 and max|d| <= 2e-4 * max|ref| (fast_vs_cpu_bound), and fused vs unfused as below;
//  - vs the unfused CUDA path (kSameArithmetic): the fused kernels run each row with the same
//    per-lane instruction sequence, so the results are expected bitwise equal; asserted as
//    NMSE <= 1e-14 and max|d| <= 1e-6 * max|ref| (room for one fp32 rounding; a wrong row or
//    segment gives NMSE ~ 1).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ops_test_util.h"

namespace qwen::test {
namespace {

using Bytes = std::vector<uint8_t>;
// The ops of one scene, given the backend and its copies of the scene's buffers.
using Ops = std::function<void(Backend&, const std::vector<void*>&)>;

template <class T>
Bytes to_bytes(const std::vector<T>& v) {
  Bytes b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<float> to_floats(const Bytes& b) {
  std::vector<float> v(b.size() / sizeof(float));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(float));
  return v;
}

// A CUDA backend with the named fusions (CudaFusions::parse; nullptr: the default set), exact or
// with the fast arithmetic.
std::unique_ptr<Backend> cuda_backend(const char* fusions, bool exact) {
  return make_cuda_backend(0, CudaOptions{exact, fusions ? CudaFusions::parse(fusions) : CudaFusions{}});
}

// Uploads `bufs` to `be`, runs `ops` with no download in between (so held-back ops fuse), and
// returns every buffer's contents afterwards.
std::vector<Bytes> run(Backend& be, const std::vector<Bytes>& bufs, const Ops& ops) {
  std::vector<void*> p;
  for (const Bytes& b : bufs) {
    p.push_back(be.alloc(b.size()));
    be.upload(p.back(), b.data(), b.size());
  }
  ops(be, p);
  be.synchronize();
  std::vector<Bytes> out(bufs.size());
  for (size_t i = 0; i < bufs.size(); ++i) {
    out[i].resize(bufs[i].size());
    be.download(out[i].data(), p[i], out[i].size());
    be.free(p[i]);
  }
  return out;
}

struct Output {
  size_t buf;  // index into the scene's buffers
  const char* name;
};

// How close the fused CUDA results must be to the unfused ones (see the file comment).
struct Bound {
  double nmse;
  double max_rel;  // max|d| / max|ref|
};
constexpr Bound kSameArithmetic{1e-14, 1e-6};
// vs the CPU: the GEMV's (exact dequantization, fp32 accumulation in another order), or, for
// 5-64 tokens, gemm_small's (weights rounded to fp16 once, x in two 16-bit halves; the bounds of
// test_matmul_parity, with room for the SwiGLU and down projection downstream).
constexpr Bound kGemvVsCpu{1e-10, 1e-5};
// Fast mode's GEMV of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q5_K (x quantized to 16 bits,
// test_matmul_parity's FastDecode bounds with room for the SwiGLU and down projection downstream);
// other types run the exact GEMV there too.
Bound fast_vs_cpu_bound(GGMLType t) {
  return cuda::has_unit_dot(t) ? Bound{5e-9, 2e-4} : kGemvVsCpu;
}
Bound vs_cpu_bound(GGMLType t, int n_tokens) {
  if (n_tokens <= 4 || t == GGMLType::F32) return kGemvVsCpu;
  if (t == GGMLType::F16) return {1e-8, 1e-3};
  if (t == GGMLType::BF16) return {1e-7, 1e-3};
  return {1e-5, 1e-2};
}

// Runs the scene on the CPU, on CUDA with `fusions` and on unfused CUDA; checks `outputs` with the
// bounds of the file comment, `vs_unfused` against the unfused CUDA run.
void check_scene(const std::vector<Bytes>& bufs, const Ops& ops, const std::vector<Output>& outputs,
                 const char* fusions, Bound vs_unfused, Bound vs_cpu_b = kGemvVsCpu, bool exact = true) {
  SCOPED_TRACE(testing::Message() << "fusions " << (fusions ? fusions : "(default)")
                                  << (exact ? "" : ", fast"));
  auto cpu = make_cpu_backend(0);
  const std::vector<Bytes> ref = run(*cpu, bufs, ops);
  const std::vector<Bytes> fused = run(*cuda_backend(fusions, exact), bufs, ops);
  const std::vector<Bytes> plain = run(*cuda_backend("0", exact), bufs, ops);
  for (const Output& o : outputs) {
    const auto r = to_floats(ref[o.buf]), f = to_floats(fused[o.buf]), u = to_floats(plain[o.buf]);
    const Diff vs_cpu = compare(f.data(), r.data(), r.size());
    EXPECT_EQ(vs_cpu.n_nonfinite, 0) << o.name << " vs CPU: " << describe(vs_cpu);
    EXPECT_LE(vs_cpu.nmse, vs_cpu_b.nmse) << o.name << " vs CPU: " << describe(vs_cpu);
    EXPECT_LE(vs_cpu.max_abs, vs_cpu_b.max_rel * vs_cpu.ref_max) << o.name << " vs CPU: " << describe(vs_cpu);
    const Diff vs_plain = compare(f.data(), u.data(), u.size());
    EXPECT_EQ(vs_plain.n_nonfinite, 0) << o.name << " vs unfused CUDA: " << describe(vs_plain);
    EXPECT_LE(vs_plain.nmse, vs_unfused.nmse) << o.name << " vs unfused CUDA: " << describe(vs_plain);
    EXPECT_LE(vs_plain.max_abs, vs_unfused.max_rel * vs_plain.ref_max)
        << o.name << " vs unfused CUDA: " << describe(vs_plain);
  }
}

bool is_kquant(GGMLType t) {
  return type_traits(t).block_size == 256;
}

Bytes zeros_f32(size_t n) {
  return Bytes(n * sizeof(float), 0);
}

class FusionDecode : public testing::TestWithParam<GGMLType> {
 protected:
  void SetUp() override { QWEN_REQUIRE_GPU(); }
};

// q, k, v projections with biases from one x (qkv: one launch of 896 + 128 + 128 rows; at 8 and
// 40 tokens one gemm_small launch).
TEST_P(FusionDecode, QkvGroup) {
  const GGMLType t = GetParam();
  std::mt19937 rng(500 + int(t));
  const int64_t E = is_kquant(t) ? 1024 : 896, Q = E, KV = 128;
  for (int n : {1, 4, 8, 40}) {
    SCOPED_TRACE(testing::Message() << type_name(t) << ", " << n << " tokens");
    // 0 wq, 1 wk, 2 wv, 3 bq, 4 bk, 5 bv, 6 x, 7 q, 8 k, 9 v
    const std::vector<Bytes> bufs = {random_weight(rng, t, Q, E),
                                     random_weight(rng, t, KV, E),
                                     random_weight(rng, t, KV, E),
                                     to_bytes(random_floats(rng, Q)),
                                     to_bytes(random_floats(rng, KV)),
                                     to_bytes(random_floats(rng, KV)),
                                     to_bytes(random_floats(rng, size_t(n) * E)),
                                     zeros_f32(size_t(n) * Q),
                                     zeros_f32(size_t(n) * KV),
                                     zeros_f32(size_t(n) * KV)};
    const Ops ops = [&](Backend& be, const std::vector<void*>& p) {
      auto f = [&](int i) { return static_cast<float*>(p[i]); };
      be.matmul(f(7), Weight{t, E, Q, p[0]}, f(6), n, f(3));
      be.matmul(f(8), Weight{t, E, KV, p[1]}, f(6), n, f(4));
      be.matmul(f(9), Weight{t, E, KV, p[2]}, f(6), n, f(5));
    };
    const std::vector<Output> outs = {{7, "q"}, {8, "k"}, {9, "v"}};
    check_scene(bufs, ops, outs, nullptr, kSameArithmetic, vs_cpu_bound(t, n));
    check_scene(bufs, ops, outs, "qkv", kSameArithmetic, vs_cpu_bound(t, n));
    check_scene(bufs, ops, outs, "qkv,rows", kSameArithmetic, vs_cpu_bound(t, n));
    if (n <= 4) check_scene(bufs, ops, outs, "qkv,rows", kSameArithmetic, fast_vs_cpu_bound(t), false);
  }
}

// The MLP of a layer: gate, up, swiglu into gate, down (deep at 1 token: 896 rows of 4864 fit
// one block per SM), residual add. At 8 and 40 tokens: gate and up in one gemm_small launch, the
// down projection with the residual epilogue.
TEST_P(FusionDecode, GateUpSwigluDown) {
  const GGMLType t = GetParam();
  std::mt19937 rng(700 + int(t));
  const int64_t E = is_kquant(t) ? 1024 : 896, F = 4864;
  for (int n : {1, 4, 8, 40}) {
    SCOPED_TRACE(testing::Message() << type_name(t) << ", " << n << " tokens");
    // 0 wg, 1 wu, 2 wd, 3 x, 4 g, 5 u, 6 o, 7 r
    const std::vector<Bytes> bufs = {
        random_weight(rng, t, F, E), random_weight(rng, t, F, E),
        random_weight(rng, t, E, F), to_bytes(random_floats(rng, size_t(n) * E, -2.f, 2.f)),
        zeros_f32(size_t(n) * F),    zeros_f32(size_t(n) * F),
        zeros_f32(size_t(n) * E),    to_bytes(random_floats(rng, size_t(n) * E))};
    const Ops ops = [&](Backend& be, const std::vector<void*>& p) {
      auto f = [&](int i) { return static_cast<float*>(p[i]); };
      be.matmul(f(4), Weight{t, E, F, p[0]}, f(3), n, nullptr);
      be.matmul(f(5), Weight{t, E, F, p[1]}, f(3), n, nullptr);
      be.swiglu(f(4), f(4), f(5), int64_t(n) * F);
      be.matmul(f(6), Weight{t, F, E, p[2]}, f(4), n, nullptr);
      be.add(f(7), f(7), f(6), int64_t(n) * E);
    };
    const std::vector<Output> outs = {{4, "swiglu (gate)"}, {5, "up"}, {6, "down"}, {7, "residual"}};
    check_scene(bufs, ops, outs, nullptr, kSameArithmetic, vs_cpu_bound(t, n));
    check_scene(bufs, ops, outs, "gateup", kSameArithmetic, vs_cpu_bound(t, n));
    check_scene(bufs, ops, outs, "qkv,resid", kSameArithmetic, vs_cpu_bound(t, n));
    check_scene(bufs, ops, outs, "deep", kSameArithmetic, vs_cpu_bound(t, n));
    check_scene(bufs, ops, outs, "gateup,rows", kSameArithmetic, vs_cpu_bound(t, n));
    if (n <= 4) {
      check_scene(bufs, ops, outs, nullptr, kSameArithmetic, fast_vs_cpu_bound(t), false);
      check_scene(bufs, ops, outs, "gateup,rows", kSameArithmetic, fast_vs_cpu_bound(t), false);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, FusionDecode,
                         testing::Values(GGMLType::F32, GGMLType::F16, GGMLType::BF16, GGMLType::Q8_0,
                                         GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0, GGMLType::Q5_1,
                                         GGMLType::Q2_K, GGMLType::Q3_K, GGMLType::Q4_K, GGMLType::Q5_K,
                                         GGMLType::Q6_K),
                         [](const testing::TestParamInfo<GGMLType>& i) {
                           return std::string(type_name(i.param));
                         });

// Where the patterns must not fuse, or fuse only partly, the result is still the unfused one:
// q/k/v of different types after a norm (no group), gate/up after a norm with SwiGLU writing
// into up (with gateup one launch, with qkv alone a group and a separate SwiGLU), gate/up under
// gateup alone followed by something other than SwiGLU (two plain launches).
TEST(FusionDecodeEdges, PartialPatterns) {
  QWEN_REQUIRE_GPU();
  std::mt19937 rng(31);
  const int64_t E = 896, KV = 128, F = 4864;
  const int n = 2;
  const GGMLType tq = GGMLType::Q8_0, tk = GGMLType::F16;
  // 0 wq, 1 wk, 2 wv, 3 wg, 4 wu, 5 norm_w, 6 x, 7 cur, 8 q, 9 k, 10 v, 11 g, 12 u, 13 cur2, 14 g2, 15 u2
  const std::vector<Bytes> bufs = {random_weight(rng, tq, E, E),
                                   random_weight(rng, tk, KV, E),
                                   random_weight(rng, tq, KV, E),
                                   random_weight(rng, tq, F, E),
                                   random_weight(rng, tq, F, E),
                                   to_bytes(random_floats(rng, E, 0.5f, 1.5f)),
                                   to_bytes(random_floats(rng, size_t(n) * E, -3.f, 3.f)),
                                   zeros_f32(size_t(n) * E),
                                   zeros_f32(size_t(n) * E),
                                   zeros_f32(size_t(n) * KV),
                                   zeros_f32(size_t(n) * KV),
                                   zeros_f32(size_t(n) * F),
                                   zeros_f32(size_t(n) * F),
                                   zeros_f32(size_t(n) * E),
                                   zeros_f32(size_t(n) * F),
                                   zeros_f32(size_t(n) * F)};
  const Ops ops = [&](Backend& be, const std::vector<void*>& p) {
    auto f = [&](int i) { return static_cast<float*>(p[i]); };
    // Mixed types: q (Q8_0), k (F16), v (Q8_0) never share a launch.
    be.rmsnorm(f(7), f(6), f(5), n, E, 1e-6f);
    be.matmul(f(8), Weight{tq, E, E, p[0]}, f(7), n, nullptr);
    be.matmul(f(9), Weight{tk, E, KV, p[1]}, f(7), n, nullptr);
    be.matmul(f(10), Weight{tq, E, KV, p[2]}, f(7), n, nullptr);
    // Gate, up joining it; SwiGLU into up.
    be.rmsnorm(f(13), f(6), f(5), n, E, 1e-6f);
    be.matmul(f(11), Weight{tq, E, F, p[3]}, f(13), n, nullptr);
    be.matmul(f(12), Weight{tq, E, F, p[4]}, f(13), n, nullptr);
    be.swiglu(f(12), f(11), f(12), int64_t(n) * F);
    // A gate/up pair followed by an add instead of SwiGLU.
    be.matmul(f(14), Weight{tq, E, F, p[3]}, f(7), n, nullptr);
    be.matmul(f(15), Weight{tq, E, F, p[4]}, f(7), n, nullptr);
    be.add(f(14), f(14), f(15), int64_t(n) * F);
  };
  const std::vector<Output> outs = {{7, "attn_norm"},
                                    {8, "q"},
                                    {9, "k"},
                                    {10, "v"},
                                    {13, "ffn_norm"},
                                    {11, "gate"},
                                    {12, "swiglu (up)"},
                                    {14, "gate2 + up2"},
                                    {15, "up2"}};
  for (const char* fusions : {"gateup", "qkv", "qkv,gateup", "resid,rope,qkv,gateup,deep"})
    check_scene(bufs, ops, outs, fusions, kSameArithmetic);
}

}  // namespace
}  // namespace qwen::test
