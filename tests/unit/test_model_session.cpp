// Runtime on a tiny synthetic qwen2 model with the real Qwen vocabulary (made once per suite by
// scripts/make_model.py): batched multi-slot evaluation equals one slot at a time, prefix reuse
// equals a fresh run, stop strings / cancel / length / context-full finish reasons, seeds.
// Skipped with the reason when python3 + gguf or the shared tokenizer are not available.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "runtime/session.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace qwen {
namespace {

namespace fs = std::filesystem;

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* shared = std::getenv("QWEN_SHARED_DIR");
    const fs::path shared_dir =
        shared ? fs::path(shared) : fs::path(QWEN_SOURCE_DIR).parent_path() / "shared";
    const fs::path vocab = shared_dir / "data" / "qwen2-tokenizer" / "tokenizer.json";
    if (!fs::exists(vocab)) {
      skip_reason_ = "shared tokenizer not found at " + vocab.string() + " (set QWEN_SHARED_DIR)";
      return;
    }
    // ctest runs each test in its own process: the model is made once, under a name that changes
    // with the arguments, written to a private name and renamed so parallel runs never see half a file.
    const std::string args =
        "--arch qwen2 --n-embd 64 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 128"
        " --n-vocab 151936 --type Q8_0 --seed 5";
    model_ =
        fs::temp_directory_path() /
        ("qwen_session_test_" + std::to_string(std::hash<std::string>{}(args + vocab.string())) + ".gguf");
    if (fs::exists(model_)) return;
    const fs::path tmp = model_.string() + "." + std::to_string(::getpid());
    const std::string cmd = "python3 " + (fs::path(QWEN_SOURCE_DIR) / "scripts" / "make_model.py").string() +
                            " " + args + " --vocab " + vocab.string() + " -o " + tmp.string() +
                            " > /dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      skip_reason_ = "could not run: " + cmd + " (python3 with gguf needed)";
      return;
    }
    fs::rename(tmp, model_);
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  static std::unique_ptr<Engine> load(int n_seq, int n_ctx = 256, int max_batch = 512) {
    EngineOptions o;
    o.model_path = model_.string();
    o.device = "cpu";
    o.n_seq = n_seq;
    o.n_ctx = n_ctx;
    o.max_batch = max_batch;
    return Engine::load(o);
  }
  static GenerateParams greedy(int n) {
    GenerateParams p;
    p.max_tokens = n;
    p.sampler.temperature = 0.f;
    p.ignore_eog = true;  // random weights: keep going whatever is sampled
    return p;
  }

  static inline fs::path model_;
  static inline std::string skip_reason_;
};

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0.f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// warm_up: nothing to capture on the CPU (0 sizes, slots stay empty); refused, naming the slot,
// once a slot holds tokens.
TEST_F(SessionTest, WarmUpOnlyOnEmptySlots) {
  auto e = load(3);
  EXPECT_EQ(e->warm_up(), 0);
  for (int s = 0; s < 3; ++s) EXPECT_TRUE(e->slot_tokens(s).empty());
  const std::vector<int32_t> toks = {1, 2, 3};
  std::vector<float> logits;
  e->eval(std::vector<Engine::Input>{{1, toks}}, logits);
  try {
    e->warm_up();
    FAIL() << "warm_up accepted a slot holding tokens";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("slot 1 holds 3 tokens"), std::string::npos) << err.what();
  }
}

// Metric: max |Δlogit| between three slots evaluated in one batch and each alone; <= 1e-4.
TEST_F(SessionTest, BatchedEvalMatchesOneSlotAtATime) {
  auto e = load(3);
  const Tokenizer& tok = e->tokenizer();
  const std::vector<std::vector<int32_t>> prompts = {
      tok.encode("The quick brown fox jumps over the lazy dog"), tok.encode("Hello"),
      tok.encode("One two three four five six seven")};
  std::vector<Engine::Input> in;
  for (int s = 0; s < 3; ++s) in.push_back({s, prompts[s]});
  std::vector<float> batched, single;
  e->eval(in, batched);
  const size_t V = size_t(e->n_vocab());
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(e->slot_tokens(s), prompts[s]);
    e->clear_slot(s);
    const Engine::Input one{s, prompts[s]};
    e->eval(std::span(&one, 1), single);
    EXPECT_LE(max_abs_diff(batched.data() + s * V, single.data(), V), 1e-4f) << "slot " << s;
  }
}

// Prompts longer than max_batch are split over several forward calls, also across two slots
// sharing calls; max |Δlogit| vs one call per prompt <= 1e-4.
TEST_F(SessionTest, ChunkedPrefillMatchesOneCall) {
  auto whole = load(2), chunked = load(2, 256, /*max_batch=*/4);
  const Tokenizer& tok = whole->tokenizer();
  const auto a = tok.encode("a prompt that is longer than four tokens for sure");
  const auto b = tok.encode("and a second one, also long enough");
  const std::vector<Engine::Input> in = {{0, a}, {1, b}};
  std::vector<float> want, got;
  whole->eval(in, want);
  chunked->eval(in, got);
  EXPECT_EQ(chunked->slot_tokens(0), a);
  EXPECT_EQ(chunked->slot_tokens(1), b);
  EXPECT_LE(max_abs_diff(want.data(), got.data(), want.size()), 1e-4f);
}

// prefill() appends like eval() without returning logits: prefilling all but the last token of
// two prompts, then evaluating the last ones, gives eval()'s logits of the whole prompts
// (max |Δlogit| <= 1e-4) and the same slot contents.
TEST_F(SessionTest, PrefillThenLastTokenMatchesEval) {
  auto whole = load(2), split = load(2, 256, /*max_batch=*/4);
  const Tokenizer& tok = whole->tokenizer();
  const auto a = tok.encode("a prompt that is longer than four tokens for sure");
  const auto b = tok.encode("and a second one");
  std::vector<float> want, got;
  const std::vector<Engine::Input> in = {{0, a}, {1, b}};
  whole->eval(in, want);
  const std::vector<Engine::Input> head = {{0, std::span(a).first(a.size() - 1)},
                                           {1, std::span(b).first(b.size() - 1)}};
  split->prefill(head);
  const std::vector<Engine::Input> tail = {{0, std::span(a).last(1)}, {1, std::span(b).last(1)}};
  split->eval(tail, got);
  EXPECT_EQ(split->slot_tokens(0), a);
  EXPECT_EQ(split->slot_tokens(1), b);
  EXPECT_LE(max_abs_diff(want.data(), got.data(), want.size()), 1e-4f);
}

TEST_F(SessionTest, SteppingGenerationsTogetherEqualsAlone) {
  auto e = load(2);
  const Tokenizer& tok = e->tokenizer();
  Generation a(*e, 0, tok.encode("Once upon a time"), greedy(12));
  Generation b(*e, 1, tok.encode("In a galaxy far away, there was"), greedy(7));
  std::vector<Generation*> gens = {&a, &b};
  while (!a.done() || !b.done()) e->step(gens);
  EXPECT_EQ(b.result().finish, FinishReason::Length);
  EXPECT_EQ(b.result().tokens.size(), 7u);

  auto solo = load(1);
  Session s(*solo);
  EXPECT_EQ(s.generate(tok.encode("Once upon a time"), greedy(12)).tokens, a.result().tokens);
  s.reset();
  EXPECT_EQ(s.generate(tok.encode("In a galaxy far away, there was"), greedy(7)).tokens, b.result().tokens);
}

// Greedy generation downloads only on-device argmax ids; they equal the argmax of the full
// logits from eval() (lowest index on ties both ways).
TEST_F(SessionTest, GreedyArgmaxPathEqualsHostArgmax) {
  auto e = load(1);
  const auto prompt = e->tokenizer().encode("Greedy decoding check");
  Session s(*e);
  const Completion c = s.generate(prompt, greedy(8));
  s.reset();
  std::vector<int32_t> feed = prompt, want;
  std::vector<float> logits;
  for (int i = 0; i < 8; ++i) {
    const Engine::Input in{0, feed};
    e->eval(std::span(&in, 1), logits);
    want.push_back(int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    feed = {want.back()};
  }
  EXPECT_EQ(c.tokens, want);
}

// With max_batch 4, a 10+ token prompt is prefilled over several steps while a short one already
// decodes; both still produce what they produce alone.
TEST_F(SessionTest, LongPromptPrefillDoesNotStallOtherSlots) {
  auto e = load(2, 256, /*max_batch=*/4);
  const Tokenizer& tok = e->tokenizer();
  const auto long_prompt = tok.encode("This prompt is quite a bit longer than four tokens, surely");
  const auto short_prompt = tok.encode("Hi");
  ASSERT_GT(long_prompt.size(), 8u);
  ASSERT_LE(short_prompt.size(), 4u);
  Generation a(*e, 0, long_prompt, greedy(6));
  Generation b(*e, 1, short_prompt, greedy(6));
  std::vector<Generation*> gens = {&a, &b};
  e->step(gens);
  EXPECT_TRUE(a.result().tokens.empty());  // prefilling
  EXPECT_EQ(b.result().tokens.size(), 1u);
  while (!a.done() || !b.done()) e->step(gens);
  EXPECT_EQ(a.result().timing.n_prompt, int(long_prompt.size()));

  auto solo = load(1);
  Session s(*solo);
  EXPECT_EQ(s.generate(long_prompt, greedy(6)).tokens, a.result().tokens);
  s.reset();
  EXPECT_EQ(s.generate(short_prompt, greedy(6)).tokens, b.result().tokens);
}

TEST_F(SessionTest, PrefixReuseEqualsFreshRun) {
  auto e = load(1);
  const Tokenizer& tok = e->tokenizer();
  Session s(*e);
  const auto first = tok.encode("User: hi\nAssistant:");
  s.generate(first, greedy(5));
  auto second = first;
  for (int32_t id : tok.encode(" and then something else")) second.push_back(id);
  const Completion reused = s.generate(second, greedy(10));
  EXPECT_EQ(reused.timing.n_cached, int(first.size()));
  EXPECT_EQ(reused.timing.n_prompt, int(second.size() - first.size()));
  s.reset();
  const Completion fresh = s.generate(second, greedy(10));
  EXPECT_EQ(fresh.timing.n_cached, 0);
  EXPECT_EQ(fresh.tokens, reused.tokens);
  EXPECT_EQ(fresh.text, reused.text);
}

TEST_F(SessionTest, StopStringCutsTextAndIsNotEmitted) {
  auto e = load(1);
  Session s(*e);
  const Completion full = s.generate(std::string_view("The weather today is"), greedy(24));
  ASSERT_GE(full.text.size(), 8u);
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  const size_t cut = full.text.find(stop);
  GenerateParams p = greedy(24);
  p.stop = {stop};
  std::string streamed;
  const Completion c = s.generate(std::string_view("The weather today is"), p, [&](std::string_view piece) {
    streamed += piece;
    return true;
  });
  EXPECT_EQ(c.finish, FinishReason::Stop);
  EXPECT_EQ(c.text, full.text.substr(0, cut));
  EXPECT_EQ(streamed, c.text);
}

TEST_F(SessionTest, CancelLengthAndContextFull) {
  auto e = load(1, /*n_ctx=*/24);
  Session s(*e);
  const auto prompt = e->tokenizer().encode("Counting: one two three");
  ASSERT_LT(prompt.size(), 20u);
  int pieces = 0;
  const Completion cancelled = s.generate(prompt, greedy(20), [&](std::string_view) { return ++pieces < 2; });
  EXPECT_EQ(cancelled.finish, FinishReason::Cancelled);
  EXPECT_EQ(pieces, 2);
  EXPECT_EQ(s.generate(prompt, greedy(3)).finish, FinishReason::Length);
  const Completion full = s.generate(prompt, greedy(-1));
  EXPECT_EQ(full.finish, FinishReason::ContextFull);
  EXPECT_EQ(full.tokens.size(), 24 - prompt.size() + 1);  // the last sampled token needs no slot
  std::vector<int32_t> too_long(24, prompt[0]);
  EXPECT_THROW(Generation(*e, 0, too_long, greedy(1)), Error);
}

TEST_F(SessionTest, SeedReproducesSampling) {
  auto e = load(1);
  Session s(*e);
  GenerateParams p = greedy(16);
  p.sampler.temperature = 1.0f;
  p.sampler.top_k = 0;
  p.sampler.top_p = 1.f;
  p.sampler.min_p = 0.f;
  auto run = [&](uint64_t seed) {
    p.sampler.seed = seed;
    s.reset();
    return s.generate(std::string_view("Random words:"), p).tokens;
  };
  EXPECT_EQ(run(11), run(11));
  EXPECT_NE(run(11), run(12));
}

}  // namespace
}  // namespace qwen
