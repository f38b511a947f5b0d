// Continuous batching on the GPU through the runtime (Engine::eval, the path of qwen-server):
// several slots with prompts of different lengths, then decode steps of one token per slot at
// the batch sizes a server sees (40, 9 and 5 slots: gemm_small's 64-, 16- and 8-token tiles),
// each size run eagerly once and then replayed from a captured graph. CUDA vs the CPU engine on
// tiny synthetic qwen2 models (ops_test_util.h: make_model), F16 KV cache on both sides; every
// vocabulary row of every slot and step is compared.
// Bound: max |dlogit| <= 2e-3 * max|logit| for F16 weights and <= 2e-2 * max|logit| for quantized
// weights (rounded to fp16 once for the tensor cores, as in the prefill bound of
// test_model_parity).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "ops_test_util.h"
#include "runtime/session.h"

namespace qwen::test {
namespace {

class BatchedDecode : public testing::TestWithParam<GGMLType> {
 protected:
  void SetUp() override { QWEN_REQUIRE_GPU(); }
};

// Logits of every eval of the scenario, concatenated, on `device`; with `warm`, every decode
// size's graph is captured up front (Engine::warm_up, as qwen-server does) and only replayed.
std::vector<float> scenario(const std::string& path, const char* device, bool warm = false) {
  EngineOptions o;
  o.model_path = path;
  o.device = device;
  o.n_seq = 40;
  o.n_ctx = 64;
  o.kv_type = GGMLType::F16;
  auto engine = Engine::load(o);
  if (warm) EXPECT_EQ(engine->warm_up(), 40) << "one captured graph per decode size 1..n_seq";
  std::mt19937 rng(17);
  std::vector<float> all, logits;
  auto eval = [&](int n_slots, int n_tokens_each) {
    std::vector<std::vector<int32_t>> toks(static_cast<size_t>(n_slots));
    std::vector<Engine::Input> inputs;
    for (int s = 0; s < n_slots; ++s) {
      const int n = n_tokens_each > 0 ? n_tokens_each : 1 + s % 7;  // ragged prompts
      for (int i = 0; i < n; ++i) toks[size_t(s)].push_back(int32_t(rng() % 512));
      inputs.push_back({s, toks[size_t(s)]});
    }
    engine->eval(inputs, logits);
    all.insert(all.end(), logits.begin(), logits.end());
  };
  eval(40, 0);                              // prompts: one mixed prefill forward
  for (int i = 0; i < 3; ++i) eval(40, 1);  // 40-token steps: eager, capture, replay
  for (int i = 0; i < 3; ++i) eval(9, 1);   // 9 slots
  for (int i = 0; i < 3; ++i) eval(5, 1);   // 5 slots
  return all;
}

void check_against_cpu(GGMLType t, bool warm) {
  const std::string path = make_model("qwen2", t);
  if (testing::Test::HasFailure()) return;
  const auto ref = scenario(path, "cpu"), got = scenario(path, "cuda", warm);
  ASSERT_EQ(ref.size(), got.size());
  const int n_vocab = 512;
  const bool exact_w = t == GGMLType::F16 || t == GGMLType::BF16;
  const double bound = exact_w ? 2e-3 : 2e-2;
  int worst_row = -1;
  double worst = 0;
  for (size_t r = 0; r < ref.size() / n_vocab; ++r) {
    const Diff d = compare(got.data() + r * n_vocab, ref.data() + r * n_vocab, n_vocab);
    ASSERT_EQ(d.n_nonfinite, 0) << "row " << r;
    EXPECT_LE(d.max_abs, bound * d.ref_max) << "logit row " << r << ": " << describe(d);
    if (d.max_abs / d.ref_max > worst) worst = d.max_abs / d.ref_max, worst_row = int(r);
  }
  std::printf("[ batched  ] %s%s: %zu logit rows, worst max|dlogit|/max|logit| %.2e (row %d, bound %.0e)\n",
              type_name(t), warm ? " (warmed up)" : "", ref.size() / n_vocab, worst, worst_row, bound);
}

TEST_P(BatchedDecode, SlotsAgreeWithCpu) {
  check_against_cpu(GetParam(), false);
}

// The graphs captured by warm_up (token 0 at position 0 of empty slots) replay the real steps.
TEST_P(BatchedDecode, WarmedUpSlotsAgreeWithCpu) {
  check_against_cpu(GetParam(), true);
}

INSTANTIATE_TEST_SUITE_P(Types, BatchedDecode,
                         testing::Values(GGMLType::F16, GGMLType::BF16, GGMLType::Q8_0, GGMLType::Q4_0,
                                         GGMLType::Q4_K, GGMLType::Q6_K),
                         [](const testing::TestParamInfo<GGMLType>& i) {
                           return std::string(type_name(i.param));
                         });

}  // namespace
}  // namespace qwen::test
