// CUDA kv_store + causal GQA attention vs the CPU backend: prefill (many tokens per head, one
// split), continued prefill over a cached prefix, mixed-sequence batches, and decode (split-K
// over up to 1,000 cached positions), for F32, F16, BF16 and Q8_0 caches, GQA 14:2 (head_dim 64),
// 16:8 (head_dim 128), 28:4 (head_dim 128) and 16:2 (head_dim 256), with the CUDA backend exact
// and fast (over an F16 or BF16 cache the flash kernels run: prefill for runs of >= 16 tokens of
// one sequence, flash-decoding otherwise; F32 and Q8_0 caches stay on the fp32 kernel). A tap of
// the output checks which of the two kernels ran.
// Bounds: the cache contents are bit-identical (same fp16 / bf16 round-to-nearest-even; Q8_0: the
// same IEEE d = amax / 127, 1 / d and round half away from zero as gguf's quantize_row). Exact:
// attention reads the same values (Q8_0: d * q) and is fp32 on both sides with a different
// summation order: NMSE <= 1e-10, max|d| <= 1e-5 max|ref|. Fast: q and the softmax weights are
// rounded to the cache's 16-bit type before the tensor-core products: fp16 (relative 2^-12)
// NMSE <= 1e-6, max|d| <= 4e-3 max|ref|; bf16 (2^-9, 8x the error) NMSE <= 64e-6,
// max|d| <= 3.2e-2 max|ref|.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "ops_test_util.h"

namespace qwen::test {
namespace {

struct Config {
  int n_head, n_head_kv, head_dim;
  GGMLType kv_type;
  bool fast = false;
};

void PrintTo(const Config& c, std::ostream* os) {
  *os << c.n_head << ":" << c.n_head_kv << " heads of " << c.head_dim << ", " << type_name(c.kv_type)
      << " cache" << (c.fast ? ", fast" : ", exact");
}

class AttentionParity : public testing::TestWithParam<Config> {
 protected:
  void SetUp() override { QWEN_REQUIRE_GPU(); }
};

TEST_P(AttentionParity, PrefillThenDecode) {
  const Config c = GetParam();
  Pair be(!c.fast);
  std::mt19937 rng(11 + c.head_dim + c.n_head);
  // 2,048 positions: flash-decoding takes splits of at least 256 keys, so the decode steps below
  // run 8 splits (a full batch of the merge's loads) and their merge.
  const int n_seq = 2, n_ctx = 2048;
  const size_t cache_bytes = size_t(n_seq) * n_ctx * row_bytes(c.kv_type, int64_t(c.n_head_kv) * c.head_dim);
  Mirror kc(be, cache_bytes), vc(be, cache_bytes);
  const std::vector<uint8_t> zeros(cache_bytes, 0);
  kc.upload(zeros.data());
  vc.upload(zeros.data());
  KVLayer cc{kc.cpu<void>(), vc.cpu<void>(), c.kv_type, n_seq, n_ctx, c.n_head_kv, c.head_dim};
  KVLayer cg{kc.gpu<void>(), vc.gpu<void>(), c.kv_type, n_seq, n_ctx, c.n_head_kv, c.head_dim};
  const AttentionParams ap{c.n_head, c.n_head_kv, c.head_dim, 1.f / std::sqrt(float(c.head_dim))};

  // Runs one forward's attention for the given (seq, pos) tokens on both backends and compares.
  auto step = [&](const std::vector<int32_t>& seq, const std::vector<int32_t>& pos, const char* what) {
    SCOPED_TRACE(what);
    const int n = int(seq.size());
    Mirror s(be, seq), p(be, pos), ids(be, std::vector<int32_t>(size_t(n), 0));
    Mirror k(be, random_floats(rng, size_t(n) * c.n_head_kv * c.head_dim, -1.f, 1.f));
    Mirror v(be, random_floats(rng, size_t(n) * c.n_head_kv * c.head_dim, -1.f, 1.f));
    Mirror q(be, random_floats(rng, size_t(n) * c.n_head * c.head_dim, -3.f, 3.f));
    Mirror out(be, size_t(n) * c.n_head * c.head_dim * sizeof(float));
    int max_run = 0;
    for (int i = 0, run = 0; i < n; ++i) {
      run = i > 0 && seq[size_t(i)] == seq[size_t(i) - 1] ? run + 1 : 1;
      max_run = std::max(max_run, run);
    }
    const Batch bc{n, ids.cpu<int32_t>(), p.cpu<int32_t>(), s.cpu<int32_t>(), max_run};
    const Batch bg{n, ids.gpu<int32_t>(), p.gpu<int32_t>(), s.gpu<int32_t>(), max_run};
    be.cpu->kv_store(cc, k.cpu<float>(), v.cpu<float>(), bc);
    be.gpu->kv_store(cg, k.gpu<float>(), v.gpu<float>(), bg);
    be.cpu->attention(out.cpu<float>(), q.cpu<float>(), cc, bc, ap);
    be.gpu->attention(out.gpu<float>(), q.gpu<float>(), cg, bg, ap);
    std::string kernel;
    be.gpu->tap("attn", 0, out.gpu<float>(), n, int64_t(c.n_head) * c.head_dim,
                [&](const Tapped& t) { kernel = std::string(t.kernel); });
    const bool flash = c.fast && (c.kv_type == GGMLType::F16 || c.kv_type == GGMLType::BF16);
    EXPECT_EQ(kernel, flash ? "flash_attention" : "attention");
    EXPECT_EQ(kc.gpu_host<uint8_t>(), kc.cpu_host<uint8_t>()) << "K cache differs";
    EXPECT_EQ(vc.gpu_host<uint8_t>(), vc.cpu_host<uint8_t>()) << "V cache differs";
    const auto ref = out.cpu_host<float>(), got = out.gpu_host<float>();
    const Diff d = compare(got.data(), ref.data(), ref.size());
    EXPECT_EQ(d.n_nonfinite, 0) << describe(d);
    const bool bf16_products = flash && c.kv_type == GGMLType::BF16;
    EXPECT_LE(d.nmse, c.fast ? (bf16_products ? 64e-6 : 1e-6) : 1e-10) << describe(d);
    EXPECT_LE(d.max_abs, (c.fast ? (bf16_products ? 3.2e-2 : 4e-3) : 1e-5) * d.ref_max) << describe(d);
  };
  auto range = [](int seq, int from, int to, std::vector<int32_t>& s, std::vector<int32_t>& p) {
    for (int i = from; i < to; ++i) s.push_back(seq), p.push_back(i);
  };
  std::vector<int32_t> s, p;
  range(0, 0, 37, s, p);
  range(1, 0, 21, s, p);
  step(s, p, "prefill: two sequences in one batch");
  s.clear(), p.clear();
  range(0, 37, 337, s, p);
  step(s, p, "continued prefill over a 37-token prefix");
  s.clear(), p.clear();
  range(1, 21, 700, s, p);
  step(s, p, "long prefill of sequence 1");
  s.clear(), p.clear();
  range(0, 338, 400, s, p);
  range(1, 700, 703, s, p);
  step(s, p, "a prefill chunk and a short run of another sequence in one batch");
  for (int pos : {703, 704, 705}) step({1}, {pos}, "decode, one token (split-K)");
  step({0, 1}, {400, 706}, "decode, two sequences");
  step({0}, {401}, "decode at a short position");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionParity,
    testing::Values(Config{14, 2, 64, GGMLType::F16}, Config{14, 2, 64, GGMLType::F32},
                    Config{14, 2, 64, GGMLType::BF16}, Config{14, 2, 64, GGMLType::Q8_0},
                    Config{16, 8, 128, GGMLType::F16}, Config{16, 8, 128, GGMLType::F32},
                    Config{16, 8, 128, GGMLType::BF16}, Config{16, 8, 128, GGMLType::Q8_0},
                    Config{16, 2, 256, GGMLType::F16}, Config{16, 2, 256, GGMLType::BF16},
                    Config{16, 2, 256, GGMLType::Q8_0}, Config{14, 2, 64, GGMLType::F16, true},
                    Config{16, 8, 128, GGMLType::F16, true}, Config{28, 4, 128, GGMLType::F16, true},
                    Config{16, 2, 256, GGMLType::F16, true}, Config{14, 2, 64, GGMLType::BF16, true},
                    Config{28, 4, 128, GGMLType::BF16, true}, Config{16, 2, 256, GGMLType::BF16, true},
                    Config{14, 2, 64, GGMLType::F32, true}, Config{16, 8, 128, GGMLType::Q8_0, true}),
    [](const testing::TestParamInfo<Config>& i) {
      return "H" + std::to_string(i.param.n_head) + "_KV" + std::to_string(i.param.n_head_kv) + "_D" +
             std::to_string(i.param.head_dim) + "_" + type_name(i.param.kv_type) +
             (i.param.fast ? "_fast" : "");
    });

}  // namespace
}  // namespace qwen::test
