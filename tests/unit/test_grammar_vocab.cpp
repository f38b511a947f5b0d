// The token mask on the real Qwen vocabulary (tests/data/qwen2-tokenizer, unpacked by
// scripts/tokenizer_data.py; skipped with the reason when python3 is missing):
// - in states of every kind (structure, inside a key, inside a free string, inside a number, a
//   complete value), the trie walk's allowed set equals brute force over all 151,665 tokens (each
//   token's bytes fed to a copy of the state): exact set equality;
// - the time of one mask over the whole vocabulary is printed, the first one (cold: the state's
//   transitions not cached yet) and the median of 5; both must stay under 50 ms in every state
//   (the target is well under 20 ms on one core; the bound is loose because CI machines are shared);
// - under tool_choice's grammar (sampling/tool_grammar.h) the added tokens <tool_call> and
//   </tool_call> are allowed where their text is (a model writes them as its one token), control
//   tokens never; the allowed set equals brute force there too (exact).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sampling/grammar.h"
#include "sampling/json_schema.h"
#include "sampling/tool_grammar.h"
#include "test_tokenizer_data.h"
#include "tokenizer/tokenizer.h"

namespace qwen {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// The real vocabulary as a Tokenizer: tokenizer.json's tokens, added tokens as control tokens when
// marked special (<|im_end|> and <|endoftext|> among them, the end-of-generation ids) and as
// user-defined ones otherwise (<tool_call>), as scripts/gguf_vocab.py writes them. Merges are not
// needed to turn tokens into bytes.
std::unique_ptr<Tokenizer> real_vocab(std::string* skip) {
  const std::string dir = test::tokenizer_data_dir();
  std::ifstream in(fs::path(dir) / "tokenizer.json");
  if (dir.empty() || !in) {
    *skip = "could not unpack the test tokenizer: " + test::tokenizer_data_command() + " (python3 needed)";
    return nullptr;
  }
  const json j = json::parse(in);
  TokenizerData d;
  d.pre = "qwen2";
  size_t n = 0;
  for (const auto& [text, id] : j["model"]["vocab"].items()) n = std::max(n, id.get<size_t>() + 1);
  for (const json& t : j["added_tokens"]) n = std::max(n, t["id"].get<size_t>() + 1);
  d.tokens.resize(n);
  d.token_types.assign(n, int32_t(TokenType::kNormal));
  for (const auto& [text, id] : j["model"]["vocab"].items()) d.tokens[id.get<size_t>()] = text;
  for (const json& t : j["added_tokens"]) {
    d.tokens[t["id"].get<size_t>()] = t["content"].get<std::string>();
    d.token_types[t["id"].get<size_t>()] =
        int32_t(t["special"].get<bool>() ? TokenType::kControl : TokenType::kUserDefined);
  }
  for (size_t id = 0; id < n; ++id) {
    if (d.tokens[id].empty()) d.tokens[id] = "[PAD" + std::to_string(id) + "]";
  }
  d.eos_id = int32_t(std::find(d.tokens.begin(), d.tokens.end(), "<|im_end|>") - d.tokens.begin());
  return std::make_unique<Tokenizer>(std::move(d));
}

// Asserts that the mask `allowed` after `prefix` (the recogniser in `state`) equals brute force: an
// end-of-generation token exactly when the grammar is complete, any other token exactly when the
// recogniser accepts its bytes. Returns how many tokens are allowed.
size_t check_brute_force(const Tokenizer& tok, const TokenTrie& trie, const GrammarState& state,
                         const std::vector<uint8_t>& allowed, const std::string& prefix) {
  size_t n_allowed = 0;
  for (int32_t id = 0; id < tok.n_vocab(); ++id) {
    bool brute = false;
    if (tok.is_eog(id)) {
      brute = state.complete();
    } else if (!trie.bytes(id).empty()) {
      GrammarState copy = state;
      brute = copy.advance(trie.bytes(id));
    }
    EXPECT_EQ(bool(allowed[size_t(id)]), brute) << "token " << id << " after '" << prefix << "'";
    if (bool(allowed[size_t(id)]) != brute) return n_allowed;  // one mismatch is enough to report
    n_allowed += brute;
  }
  return n_allowed;
}

TEST(TokenMaskRealVocab, EqualsBruteForceAndIsFast) {
  std::string skip;
  auto tok = real_vocab(&skip);
  if (!tok) GTEST_SKIP() << skip;
  const auto t_trie = std::chrono::steady_clock::now();
  auto trie = std::make_shared<const TokenTrie>(*tok);
  std::printf("trie of %d tokens: %zu nodes, built in %.0f ms\n", tok->n_vocab(), trie->n_nodes(),
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_trie).count());
  auto g = json_schema_grammar(ordered_json::parse(R"({"type": "object", "properties": {
      "name": {"type": "string"}, "size": {"type": "number"}, "tags": {"type": "array",
      "items": {"enum": ["red", "green"]}, "maxItems": 4}, "nested": {"type": "object"}},
      "required": ["name", "size"], "additionalProperties": false})"));
  // Prefixes of one answer; each ends in a different kind of state.
  const std::vector<std::string> prefixes = {
      "",                                                                     // before the object
      "{",                                                                    // a key or ws
      "{\"na",                                                                // inside a fixed key
      "{\"name\": \"Some free text, caf",                                     // inside a free string
      "{\"name\": \"x\", \"size\": 1, \"nested\": {\"k\": [1, {\"a\": \"",    // a generic object's string
      "{\"name\": \"x\", \"size\": 12",                                       // inside a number
      "{\"name\": \"x\", \"size\": 1, \"tags\": [\"red\"], \"nested\": {}}",  // complete
  };
  std::vector<uint8_t> allowed;
  for (const std::string& prefix : prefixes) {
    TokenMask mask(g, trie);
    GrammarState state(g);
    ASSERT_TRUE(state.advance(prefix)) << prefix;
    // Feed the prefix to the mask as single-byte tokens (every byte is a token in Qwen's vocab).
    for (char c : prefix) mask.accept(tok->encode(std::string(1, c))[0]);

    std::vector<double> ms;  // ms[0]: cold
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      mask.allowed(allowed);
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    const double cold = ms[0];
    std::sort(ms.begin(), ms.end());
    const size_t n_allowed = check_brute_force(*tok, *trie, state, allowed, prefix);
    std::printf("mask after %-60s %7zu allowed, %.2f ms cold, %.2f ms median of 5\n",
                ("'" + prefix + "'").c_str(), n_allowed, cold, ms[2]);
    EXPECT_LT(cold, 50.0) << prefix;
    EXPECT_LT(ms[2], 50.0) << prefix;
  }
}

TEST(TokenMaskRealVocab, ToolCallTagsAreTheirAddedTokens) {
  std::string skip;
  auto tok = real_vocab(&skip);
  if (!tok) GTEST_SKIP() << skip;
  auto trie = std::make_shared<const TokenTrie>(*tok);
  ToolCallGrammar calls;
  calls.add_tool("get_weather",
                 ordered_json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}}})"));
  const auto g = calls.finish(/*parallel=*/true);
  const int32_t open = *tok->find_token("<tool_call>"), close = *tok->find_token("</tool_call>");
  const int32_t im_start = *tok->find_token("<|im_start|>");
  const std::string call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"x\"}}\n";
  // (prefix, the tag token that must be allowed after it)
  const std::vector<std::pair<std::string, int32_t>> cases = {{"", open},
                                                              {call, close},
                                                              {call + "</tool_call>\n", open},
                                                              {call.substr(0, call.size() - 4) + "<", -1}};
  std::vector<uint8_t> allowed;
  for (const auto& [prefix, tag] : cases) {
    TokenMask mask(g, trie);
    GrammarState state(g);
    ASSERT_TRUE(state.advance(prefix)) << prefix;
    for (int32_t id : tok->encode(prefix)) mask.accept(id);  // <tool_call> encodes to its token
    mask.allowed(allowed);
    if (tag >= 0) {
      EXPECT_TRUE(allowed[size_t(tag)]) << prefix;
    }
    EXPECT_FALSE(allowed[size_t(im_start)]) << prefix;
    check_brute_force(*tok, *trie, state, allowed, prefix);
  }
}

}  // namespace
}  // namespace qwen
