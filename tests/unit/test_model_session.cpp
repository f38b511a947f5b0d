// Runtime on a tiny synthetic qwen2 model with the real Qwen vocabulary (made once per suite by
// scripts/make_model.py): batched multi-slot evaluation equals one slot at a time, prefix reuse
// equals a fresh run, stop strings / cancel / length / context-full finish reasons, seeds, and
// the pipelined Engine::step (generations ending mid-run, destroyed in flight, drained by other
// calls, left out of steps) against each generation run alone; the public API (qwen/qwen.h) against
// the runtime.
// Skipped with the reason when python3 + gguf are not available.
#include <gtest/gtest.h>
#include <qwen/qwen.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/weights.h"
#include "runtime/session.h"
#include "test_tokenizer_data.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace qwen {
namespace {

namespace fs = std::filesystem;

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The repository's tokenizer (tests/data/qwen2-tokenizer), unpacked by scripts/tokenizer_data.py.
    const std::string dir = test::tokenizer_data_dir();
    const fs::path vocab = fs::path(dir) / "tokenizer.json";
    if (dir.empty() || !fs::exists(vocab)) {
      skip_reason_ =
          "could not unpack the test tokenizer: " + test::tokenizer_data_command() + " (python3 needed)";
      return;
    }
    const std::string args =
        "--arch qwen2 --n-embd 64 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 128"
        " --n-vocab 151936 --type Q8_0 --seed 5";
    model_ = make_model(args, vocab);
    // Tied embeddings: the output head is the embedding table, so the tiny model tends to repeat
    // its last input token; a prompt ending in <|im_end|> then samples an end-of-generation token.
    if (skip_reason_.empty()) tied_model_ = make_model(args + " --tied", vocab);
  }
  // ctest runs each test in its own process: a model is made once, under a name that changes with
  // the arguments, written to a private name and renamed so parallel runs never see half a file.
  static fs::path make_model(const std::string& args, const fs::path& vocab) {
    const fs::path path =
        fs::temp_directory_path() /
        ("qwen_session_test_" + std::to_string(std::hash<std::string>{}(args + vocab.string())) + ".gguf");
    if (fs::exists(path)) return path;
    const fs::path tmp = path.string() + "." + std::to_string(::getpid());
    const std::string cmd = "python3 " + (fs::path(QWEN_SOURCE_DIR) / "scripts" / "make_model.py").string() +
                            " " + args + " --vocab " + vocab.string() + " -o " + tmp.string() +
                            " > /dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      skip_reason_ = "could not run: " + cmd + " (python3 with gguf needed)";
      return {};
    }
    fs::rename(tmp, path);
    return path;
  }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  static std::unique_ptr<Engine> load(int n_seq, int n_ctx = 256, int max_batch = 512, bool tied = false) {
    EngineOptions o;
    o.model_path = (tied ? tied_model_ : model_).string();
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

 public:
  // What a test keeps of one generation: its result, the pieces its OnText saw, and its slot's
  // tokens once it ended.
  struct Run {
    Completion c;
    std::vector<std::string> pieces;
    std::vector<int32_t> slot;
  };
  // One generation of a test: cancelled from OnText on piece `cancel_at` (0: never).
  struct Case {
    std::vector<int32_t> prompt;
    GenerateParams params;
    int cancel_at = 0;
  };
  static OnText record(Run& run, int cancel_at) {
    return [&run, cancel_at](std::string_view piece) {
      run.pieces.emplace_back(piece);
      return cancel_at <= 0 || int(run.pieces.size()) < cancel_at;
    };
  }
  // The reference: the case run alone (Session::generate) on a fresh engine of one slot.
  static Run run_alone(const Case& c, int n_ctx = 256, bool tied = false) {
    auto e = load(1, n_ctx, 512, tied);
    Session s(*e);
    Run r;
    r.c = s.generate(c.prompt, c.params, record(r, c.cancel_at));
    r.slot = e->slot_tokens(0);
    return r;
  }
  // Exact equality of everything a caller sees; and an ended generation's slot holds its prompt
  // and every sampled token but the last.
  static void expect_same(const Run& got, const Run& want, const Case& c, const std::string& label) {
    EXPECT_EQ(got.c.finish, want.c.finish) << label;
    EXPECT_EQ(got.c.tokens, want.c.tokens) << label;
    EXPECT_EQ(got.c.text, want.c.text) << label;
    EXPECT_EQ(got.pieces, want.pieces) << label;
    EXPECT_EQ(got.c.timing.n_gen, want.c.timing.n_gen) << label;
    EXPECT_EQ(got.c.timing.n_prompt, want.c.timing.n_prompt) << label;
    EXPECT_EQ(got.c.timing.n_cached, want.c.timing.n_cached) << label;
    EXPECT_EQ(got.slot, want.slot) << label;
    std::vector<int32_t> slot = c.prompt;
    if (!got.c.tokens.empty()) slot.insert(slot.end(), got.c.tokens.begin(), got.c.tokens.end() - 1);
    EXPECT_EQ(got.slot, slot) << label;
  }

 protected:
  static inline fs::path model_, tied_model_;
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

// On the CPU the matrices are not copied: every one points into a mapping of the model file
// (per /proc/self/maps), and nbytes() still counts them (qwen-bench's GB/s depend on it).
TEST_F(SessionTest, CpuWeightsAreReadInPlaceFromTheMapping) {
  auto e = load(1);
  const std::string path = fs::canonical(model_).string();
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.size() < path.size() || line.compare(line.size() - path.size(), path.size(), path) != 0)
      continue;
    std::istringstream in(line);
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    in >> std::hex >> lo >> dash >> hi;
    ranges.emplace_back(lo, hi);
  }
  ASSERT_FALSE(ranges.empty()) << path << " is not mapped";
  auto mapped = [&](const Weight& w) {
    const auto p = reinterpret_cast<uintptr_t>(w.data);
    return std::any_of(ranges.begin(), ranges.end(),
                       [&](const auto& r) { return p >= r.first && p + w.nbytes() <= r.second; });
  };
  const ModelWeights& w = e->model().weights();
  size_t matrix_bytes = w.token_embd.nbytes() + (w.output.data != w.token_embd.data ? w.output.nbytes() : 0);
  EXPECT_TRUE(mapped(w.token_embd));
  EXPECT_TRUE(mapped(w.output));
  for (const LayerWeights& l : w.layers) {
    for (const Weight* m :
         {&l.attn_q, &l.attn_k, &l.attn_v, &l.attn_output, &l.ffn_gate, &l.ffn_up, &l.ffn_down}) {
      EXPECT_TRUE(mapped(*m));
      matrix_bytes += m->nbytes();
    }
  }
  EXPECT_GT(w.nbytes(), matrix_bytes);  // the matrices plus the fp32 norms and biases
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
  // step() is pipelined: a token comes out of the step after the one whose forward produced it.
  e->step(gens);
  EXPECT_TRUE(a.result().tokens.empty());  // prefilling
  EXPECT_TRUE(b.result().tokens.empty());  // its first token is in flight
  e->step(gens);
  EXPECT_TRUE(a.result().tokens.empty());  // still prefilling (3+ chunks of 4)
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

// ---- pipelined step(): each step launches the next forward before it streams the tokens it
// collected, so a generation can end (stop string, cancel) after its next token was fed.

// Steps cases[i] on slot i together, case i created before step start[i] (so while a forward is
// in flight), until all have ended; returns what each produced.
std::vector<SessionTest::Run> step_together(Engine& e, const std::vector<SessionTest::Case>& cases,
                                            const std::vector<int>& start) {
  std::vector<SessionTest::Run> got(cases.size());
  std::vector<std::unique_ptr<Generation>> gens(cases.size());
  const int last_start = *std::max_element(start.begin(), start.end());
  for (int step = 0;; ++step) {
    std::vector<Generation*> live;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (start[i] == step) {
        gens[i] = std::make_unique<Generation>(e, int(i), cases[i].prompt, cases[i].params,
                                               SessionTest::record(got[i], cases[i].cancel_at));
      }
      if (gens[i] && !gens[i]->done()) live.push_back(gens[i].get());
    }
    if (live.empty() && step > last_start) break;
    e.step(live);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    got[i].c = gens[i]->result();
    got[i].slot = e.slot_tokens(int(i));
  }
  return got;
}

// Four generations stepped together end in four ways while the others run on: a stop string, a
// cancel from OnText (its 3rd piece), max_tokens, a full context; two join late, while a forward
// is in flight. Metric: exact equality with each run alone of tokens, text, OnText pieces, finish
// reason, token counts and the slot's tokens once ended (= prompt + every sampled token but the
// last).
TEST_F(SessionTest, PipelinedEndingsEqualGenerationsAlone) {
  const int n_ctx = 40;
  auto e = load(4, n_ctx);
  const Tokenizer& tok = e->tokenizer();
  std::vector<Case> cases = {{tok.encode("The weather today is"), greedy(24)},
                             {tok.encode("Counting: one two three"), greedy(20), /*cancel_at=*/3},
                             {tok.encode("Hello"), greedy(5)},
                             {tok.encode("Once upon a time"), greedy(-1)}};
  // The stop string: 3 characters from the middle of what case 0 produces without one.
  const Run full = run_alone(cases[0], n_ctx);
  ASSERT_GE(full.c.text.size(), 8u);
  cases[0].params.stop = {full.c.text.substr(full.c.text.size() / 2, 3)};

  const std::vector<Run> got = step_together(*e, cases, {0, 0, 2, 1});
  const FinishReason want[] = {FinishReason::Stop, FinishReason::Cancelled, FinishReason::Length,
                               FinishReason::ContextFull};
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(got[i].c.finish, want[i]) << "case " << i;
    expect_same(got[i], run_alone(cases[i], n_ctx), cases[i], "case " + std::to_string(i));
  }
  EXPECT_EQ(got[1].pieces.size(), 3u);
  EXPECT_EQ(got[3].c.tokens.size(), size_t(n_ctx) - cases[3].prompt.size() + 1);
}

// An end-of-generation token (tied model: a prompt ending in <|im_end|> samples <|im_end|>) from a
// generation that joins while another decodes, and the same with ignore_eog (it goes on to
// max_tokens). Metric: exact equality with each run alone, as above.
TEST_F(SessionTest, PipelinedEogEqualsAlone) {
  auto e = load(3, 64, 512, /*tied=*/true);
  const Tokenizer& tok = e->tokenizer();
  const auto eog_prompt = tok.encode("<|im_start|>user\nhi<|im_end|>", true, true);
  GenerateParams stops_at_eog = greedy(10);
  stops_at_eog.ignore_eog = false;
  const std::vector<Case> cases = {
      {tok.encode("a b c"), greedy(8)}, {eog_prompt, stops_at_eog}, {eog_prompt, greedy(4)}};
  const std::vector<Run> got = step_together(*e, cases, {0, 3, 2});
  ASSERT_EQ(got[1].c.finish, FinishReason::Eog);
  ASSERT_EQ(got[1].c.tokens.size(), 1u);
  EXPECT_TRUE(tok.is_eog(got[1].c.tokens[0]));
  EXPECT_EQ(got[2].c.finish, FinishReason::Length);
  for (size_t i = 0; i < cases.size(); ++i) {
    expect_same(got[i], run_alone(cases[i], 64, /*tied=*/true), cases[i], "case " + std::to_string(i));
  }
}

// The step's prompt budget (chunked prefill in the batched step): a running generation decodes
// while a long prompt joins, then a short one joins while the long one is still prefilling, with
// a budget of 5 prompt tokens per step. Metric (exact): per step, the prompt tokens fed (slot
// growth of the prefilling generations) <= 5; the decoding generation gains one token every step;
// the short prompt (shortest first) has its first token before the long prompt's is sampled; each
// generation's tokens, text, pieces and slot equal its run alone (greedy and seeded sampling).
TEST_F(SessionTest, PromptBudgetInterleavesPrefillWithDecode) {
  auto e = load(3);
  const Tokenizer& tok = e->tokenizer();
  GenerateParams sampled = greedy(8);
  sampled.sampler.temperature = 0.9f;
  sampled.sampler.seed = 11;
  std::string long_text;
  for (int i = 0; i < 12; ++i) long_text += " item" + std::to_string(i);
  const std::vector<Case> cases = {{tok.encode("Running already"), greedy(24)},
                                   {tok.encode(long_text), sampled},
                                   {tok.encode("Short"), greedy(4)}};
  ASSERT_GT(cases[1].prompt.size(), 20u);
  ASSERT_LE(cases[2].prompt.size(), 2u);
  constexpr int kBudget = 5;
  std::vector<Run> got(cases.size());
  std::vector<std::unique_ptr<Generation>> gens(cases.size());
  auto start = [&](size_t i) {
    gens[i] = std::make_unique<Generation>(*e, int(i), cases[i].prompt, cases[i].params,
                                           record(got[i], cases[i].cancel_at));
  };
  start(0);
  size_t short_first_at = 0, long_first_at = 0;  // steps after which each had its first token
  for (size_t step = 1; step < 200; ++step) {
    if (step == 3) start(1);  // generation 0 has its first token and one in flight
    if (step == 5) start(2);  // the long prompt is still being prefilled
    std::vector<Generation*> live;
    std::vector<size_t> before(cases.size());
    for (size_t i = 0; i < cases.size(); ++i) {
      before[i] = e->slot_tokens(int(i)).size();
      if (gens[i] && !gens[i]->done()) live.push_back(gens[i].get());
    }
    if (live.empty()) break;
    const size_t g0_tokens = gens[0]->result().tokens.size();
    e->step(live, kBudget);
    size_t prompt_fed = 0;
    for (size_t i = 1; i < cases.size(); ++i) {
      if (!gens[i]) continue;
      const size_t after = e->slot_tokens(int(i)).size();
      // Slot growth while the prompt is not fully in counts prompt tokens (a Generation keeps the
      // slot empty up front: nothing is cached here).
      if (before[i] < cases[i].prompt.size()) prompt_fed += after - before[i];
      size_t& first_at = i == 1 ? long_first_at : short_first_at;
      if (first_at == 0 && !gens[i]->result().tokens.empty()) first_at = step;
    }
    EXPECT_LE(prompt_fed, size_t(kBudget)) << "step " << step;
    if (step >= 2 && !gens[0]->done()) {
      EXPECT_EQ(gens[0]->result().tokens.size(), g0_tokens + 1) << "step " << step;
    }
  }
  ASSERT_GT(short_first_at, 0u);
  ASSERT_GT(long_first_at, 0u);
  EXPECT_LT(short_first_at, long_first_at);
  EXPECT_EQ(short_first_at, 6u);  // fed by step 5 with the budget's first tokens, read by step 6
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(gens[i]->done());
    got[i].c = gens[i]->result();
    got[i].slot = e->slot_tokens(int(i));
    expect_same(got[i], run_alone(cases[i]), cases[i], "case " + std::to_string(i));
  }
}

// Engine::embed against the hidden states the logits forward computes anyway (the tap's
// result_norm rows of eval_all): mean, cls and last pooling equal the mean, first and last row
// (max abs error <= 1e-5: the same ops, summed in another order), also when max_batch 4 splits the
// input over several forward calls; the slot then holds the tokens.
TEST_F(SessionTest, EmbedPoolsTheFinalNormedStates) {
  auto ref = load(1);
  const auto tokens = ref->tokenizer().encode("An embedding of a dozen or so tokens, give or take");
  ASSERT_GT(tokens.size(), 8u);
  const size_t n_embd = size_t(ref->config().n_embd);
  std::vector<float> norm_rows, logits;
  ref->eval_all(tokens, false, logits, [&](const Tapped& t) {
    if (t.name == "result_norm") norm_rows.insert(norm_rows.end(), t.data, t.data + t.rows * t.cols);
  });
  ASSERT_EQ(norm_rows.size(), tokens.size() * n_embd);
  std::vector<float> mean(n_embd, 0.f);
  for (size_t t = 0; t < tokens.size(); ++t)
    for (size_t j = 0; j < n_embd; ++j) mean[j] += norm_rows[t * n_embd + j] / float(tokens.size());
  const std::vector<float> first(norm_rows.begin(), norm_rows.begin() + ptrdiff_t(n_embd));
  const std::vector<float> last(norm_rows.end() - ptrdiff_t(n_embd), norm_rows.end());
  for (int max_batch : {512, 4}) {
    auto e = load(2, 256, max_batch);
    std::vector<float> got;
    e->embed(tokens, Pooling::Mean, 1, got);
    ASSERT_EQ(got.size(), n_embd);
    EXPECT_LE(max_abs_diff(got.data(), mean.data(), n_embd), 1e-5f) << "mean, max_batch " << max_batch;
    e->embed(tokens, Pooling::Cls, 1, got);
    EXPECT_LE(max_abs_diff(got.data(), first.data(), n_embd), 1e-5f) << "cls, max_batch " << max_batch;
    e->embed(tokens, Pooling::Last, 1, got);
    EXPECT_LE(max_abs_diff(got.data(), last.data(), n_embd), 1e-5f) << "last, max_batch " << max_batch;
    EXPECT_EQ(e->slot_tokens(1), tokens);
    EXPECT_THROW(e->embed(tokens, Pooling::None, 1, got), Error);
  }
}

// A generation destroyed between two steps (a server drops a cancelled request at once) while the
// forward fed its last token is in flight. Metric (exact): before, slot_tokens shows that token
// fed; after, the slot holds prompt + every sampled token but the last (what an ended generation
// leaves); the generation stepped beside it equals its run alone; a new generation that reuses the
// slot's prefix with another token where the dropped one was equals a fresh run of its prompt.
TEST_F(SessionTest, DestroyedWhileInFlightLeavesSlotAsIfEnded) {
  auto e = load(2);
  const Tokenizer& tok = e->tokenizer();
  const Case a_case{tok.encode("Once upon a time"), greedy(20)};
  const Case b_case{tok.encode("In a galaxy far away, there was"), greedy(12)};
  auto a = std::make_unique<Generation>(*e, 0, a_case.prompt, a_case.params);
  Run b;
  Generation gb(*e, 1, b_case.prompt, b_case.params, record(b, 0));
  for (int i = 0; i < 5; ++i) e->step(std::vector<Generation*>{a.get(), &gb});
  const std::vector<int32_t> toks = a->result().tokens;
  ASSERT_EQ(toks.size(), 4u);  // step 1 fed the prompt; steps 2..5 streamed a token each
  std::vector<int32_t> slot = a_case.prompt;
  slot.insert(slot.end(), toks.begin(), toks.end());
  EXPECT_EQ(e->slot_tokens(0), slot);  // the 5th step fed toks[3]
  a.reset();
  slot.pop_back();
  EXPECT_EQ(e->slot_tokens(0), slot);

  while (!gb.done()) e->step(std::vector<Generation*>{&gb});
  b.c = gb.result();
  b.slot = e->slot_tokens(1);
  expect_same(b, run_alone(b_case), b_case, "beside");

  std::vector<int32_t> next = slot;
  const int32_t other = tok.encode(" dragon")[0];
  next.push_back(other != toks[3] ? other : other + 1);
  Generation c(*e, 0, next, greedy(8));
  EXPECT_EQ(c.result().timing.n_cached, int(slot.size()));
  Generation* cp = &c;
  while (!c.done()) e->step(std::span(&cp, 1));
  auto fresh = load(1);
  const Completion want = Session(*fresh).generate(next, greedy(8));
  EXPECT_EQ(c.result().tokens, want.tokens);
  EXPECT_EQ(c.result().text, want.text);
}

// eval() and embed() between two steps drain the forward in flight. Metric (exact): a greedy and
// a seeded sampling generation (so launches read back logits), with max_batch 4 (prompts over
// several steps, launches of several forward calls), give the same tokens, text, OnText pieces and
// slots with an eval() and an embed() on other slots between every two steps as without them;
// those eval() logits equal the same calls' on an engine running nothing else. After a drain,
// result().tokens holds the drained forward's token (its text comes with the next step), and a
// generation destroyed then leaves prompt + every token but that last one.
TEST_F(SessionTest, DrainingCallsBetweenStepsChangeNothing) {
  auto probe = load(1);
  const Tokenizer& tok = probe->tokenizer();
  GenerateParams sampled = greedy(10);
  sampled.sampler.temperature = 1.0f;
  sampled.sampler.top_k = 0;
  sampled.sampler.top_p = 1.f;
  sampled.sampler.min_p = 0.f;
  sampled.sampler.seed = 7;
  const std::vector<Case> cases = {{tok.encode("A prompt of a handful of tokens"), greedy(10)},
                                   {tok.encode("Another one, sampled"), sampled}};
  auto run = [&](bool drain, std::vector<std::vector<float>>& evals) {
    auto e = load(4, 256, /*max_batch=*/4);
    std::vector<Run> got(cases.size());
    Generation a(*e, 0, cases[0].prompt, cases[0].params, record(got[0], 0));
    Generation b(*e, 1, cases[1].prompt, cases[1].params, record(got[1], 0));
    const std::vector<Generation*> gens = {&a, &b};
    for (int32_t i = 0; !a.done() || !b.done(); ++i) {
      e->step(gens);
      if (!drain) continue;
      const size_t n_tokens = a.result().tokens.size();
      const std::string text = a.result().text;
      const int32_t t = 100 + i, u = 200 + i;
      const Engine::Input in{2, std::span(&t, 1)};
      std::vector<float> logits;
      e->eval(std::span(&in, 1), logits);
      evals.push_back(std::move(logits));
      std::vector<float> vec;
      e->embed(std::span(&u, 1), Pooling::Last, 3, vec);
      if (n_tokens > 0 && !a.done()) {  // a sampled token came out of the drained forward
        EXPECT_EQ(a.result().tokens.size(), n_tokens + 1);
        EXPECT_EQ(a.result().text, text);
      }
    }
    for (size_t i = 0; i < cases.size(); ++i) {
      got[i].c = gens[i]->result();
      got[i].slot = e->slot_tokens(int(i));
    }
    return got;
  };
  std::vector<std::vector<float>> evals, none;
  const std::vector<Run> plain = run(false, none), drained = run(true, evals);
  for (size_t i = 0; i < cases.size(); ++i) {
    expect_same(drained[i], plain[i], cases[i], "case " + std::to_string(i));
  }
  expect_same(plain[0], run_alone(cases[0]), cases[0], "greedy alone");

  auto idle = load(4, 256, 4);
  for (int32_t i = 0; i < int32_t(evals.size()); ++i) {
    const int32_t t = 100 + i, u = 200 + i;
    const Engine::Input in{2, std::span(&t, 1)};
    std::vector<float> logits;
    idle->eval(std::span(&in, 1), logits);
    EXPECT_EQ(logits, evals[size_t(i)]) << "eval " << i;
    std::vector<float> vec;
    idle->embed(std::span(&u, 1), Pooling::Last, 3, vec);
  }

  // Destroyed after a drain: its last token is no longer in flight, and was never fed.
  auto e = load(2);
  auto g = std::make_unique<Generation>(*e, 0, cases[0].prompt, greedy(20));
  for (int i = 0; i < 4; ++i) e->step(std::vector<Generation*>{g.get()});
  ASSERT_EQ(g->result().tokens.size(), 3u);
  const std::string text = g->result().text;
  const int32_t t = 5;
  std::vector<float> vec;
  e->embed(std::span(&t, 1), Pooling::Mean, 1, vec);
  const std::vector<int32_t> toks = g->result().tokens;
  ASSERT_EQ(toks.size(), 4u);
  EXPECT_EQ(g->result().text, text);
  g.reset();
  std::vector<int32_t> slot = cases[0].prompt;
  slot.insert(slot.end(), toks.begin(), toks.end() - 1);
  EXPECT_EQ(e->slot_tokens(0), slot);
}

// A generation in flight but left out of the next steps keeps the token the next step collects
// for it, and streams it once stepped again. Metric (exact): tokens, text, OnText pieces and slot
// equal its run alone; while left out, its token count grows by exactly one.
TEST_F(SessionTest, GenerationLeftOutOfStepsKeepsItsToken) {
  auto e = load(2);
  const Tokenizer& tok = e->tokenizer();
  const std::vector<Case> cases = {{tok.encode("Once upon a time"), greedy(14)},
                                   {tok.encode("The weather today is"), greedy(9)}};
  std::vector<Run> got(cases.size());
  Generation a(*e, 0, cases[0].prompt, cases[0].params, record(got[0], 0));
  Generation b(*e, 1, cases[1].prompt, cases[1].params, record(got[1], 0));
  const std::vector<Generation*> both = {&a, &b};
  for (int i = 0; i < 3; ++i) e->step(both);
  const size_t n_b = b.result().tokens.size();
  const std::string text_b = b.result().text;
  Generation* ap = &a;
  for (int i = 0; i < 4; ++i) {
    e->step(std::span(&ap, 1));
    EXPECT_EQ(b.result().tokens.size(), n_b + 1);
    EXPECT_EQ(b.result().text, text_b);
  }
  while (!a.done() || !b.done()) e->step(both);
  for (size_t i = 0; i < cases.size(); ++i) {
    got[i].c = both[i]->result();
    got[i].slot = e->slot_tokens(int(i));
    expect_same(got[i], run_alone(cases[i]), cases[i], "case " + std::to_string(i));
  }
}

// The public API (include/qwen/qwen.h) over the same tiny model: tokenize/detokenize, streaming,
// cancellation and chat give exactly what the runtime gives for the same tokens (exact CPU mode on
// both sides, so equality is exact).
class PublicApiTest : public SessionTest {};

TEST_F(PublicApiTest, MatchesTheRuntime) {
  api::LoadOptions lo;
  lo.model_path = model_.string();
  lo.device = "cpu";
  lo.n_ctx = 256;
  lo.exact = true;
  const std::unique_ptr<api::Model> m = api::Model::load(lo);
  EXPECT_NE(m->backend_name().find("exact"), std::string::npos) << m->backend_name();
  EXPECT_EQ(m->n_ctx(), 256);
  EXPECT_EQ(m->n_vocab(), 151936);

  auto engine = load(1);
  const std::string text = "Hello, world! <|im_end|>";
  const std::vector<int32_t> ids = m->tokenize(text);
  EXPECT_EQ(ids, engine->tokenizer().encode(text, true, true));
  EXPECT_EQ(m->detokenize(ids), text);

  api::GenerateOptions go;
  go.max_tokens = 6;
  go.sampling.temperature = 0.f;
  std::string streamed;
  const api::Result r = m->generate(ids, go, [&](std::string_view piece) {
    streamed += piece;
    return true;
  });
  Session s(*engine);
  GenerateParams p;
  p.max_tokens = 6;
  p.sampler.temperature = 0.f;
  const Completion want = s.generate(ids, p);
  EXPECT_EQ(r.tokens, want.tokens);
  EXPECT_EQ(r.text, want.text);
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.finish_reason, finish_reason_name(want.finish));

  const std::vector<api::ChatMessage> chat = {{"user", "What is 2 + 2?"}};
  const std::string prompt = m->chat_prompt(chat);
  EXPECT_EQ(prompt,
            ChatTemplate::for_tokenizer(engine->tokenizer()).render({{"user", "What is 2 + 2?"}}, true));
  const api::Result c = m->chat(chat, go);
  s.reset();
  EXPECT_EQ(c.tokens, s.generate(engine->tokenizer().encode(prompt, true, false), p).tokens);

  int pieces = 0;
  const api::Result cancelled = m->generate(ids, go, [&](std::string_view) { return ++pieces < 2; });
  EXPECT_EQ(cancelled.finish_reason, "cancelled");
}

TEST_F(PublicApiTest, BadOptionsAreErrorsNamingTheField) {
  api::LoadOptions lo;
  try {
    api::Model::load(lo);
    FAIL() << "loaded without a model path";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("model_path"), std::string::npos) << e.what();
  }
  lo.model_path = model_.string();
  lo.device = "tpu";
  try {
    api::Model::load(lo);
    FAIL() << "loaded on an unknown device";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tpu"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qwen
