// TokenTrie and TokenMask of sampling/grammar.h: the vocabulary walk that turns a grammar state
// into the set of tokens that may come next.
#include <algorithm>
#include <cmath>
#include <limits>

#include "sampling/grammar.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace qwen {

TokenTrie::TokenTrie(const Tokenizer& tok) {
  const int32_t n = tok.n_vocab();
  bytes_.resize(size_t(n));
  for (int32_t id = 0; id < n; ++id) {
    const TokenType t = tok.token_type(id);
    // Control tokens stand for markup, not text: the grammar never produces them. Added tokens
    // (Qwen's <tool_call>) stand for their text, and encoding that text gives them back, so they
    // are in: a model writes <tool_call> as its one token, not spelt out.
    if (t == TokenType::kNormal || t == TokenType::kByte || t == TokenType::kUserDefined)
      bytes_[size_t(id)] = tok.token_bytes(id);
  }
  eog_ = tok.eog_ids();
  for (int32_t id : eog_) bytes_[size_t(id)].clear();  // ends the output; never text in it
  build();
}

TokenTrie::TokenTrie(const std::vector<std::string>& token_bytes, std::vector<int32_t> eog)
    : bytes_(token_bytes), eog_(std::move(eog)) {
  for (int32_t id : eog_) {
    QWEN_CHECK(id >= 0 && size_t(id) < bytes_.size(), "TokenTrie: eog id ", id, " outside the vocabulary");
    bytes_[size_t(id)].clear();
  }
  std::sort(eog_.begin(), eog_.end());
  build();
}

void TokenTrie::build() {
  std::vector<int32_t> order;
  for (size_t id = 0; id < bytes_.size(); ++id) {
    if (!bytes_[id].empty()) order.push_back(int32_t(id));
  }
  // Sorted byte strings put every prefix before its extensions, so one pass emits the preorder.
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return bytes_[size_t(a)] < bytes_[size_t(b)] || (bytes_[size_t(a)] == bytes_[size_t(b)] && a < b);
  });
  std::vector<int32_t> path;  // path[k]: the node at depth k + 1 on the current string
  const std::string* prev = nullptr;
  for (int32_t id : order) {
    const std::string& s = bytes_[size_t(id)];
    QWEN_CHECK(s.size() <= 0xffff, "TokenTrie: token ", id, " has ", s.size(), " bytes");
    size_t lcp = 0;
    if (prev != nullptr) {
      while (lcp < std::min({prev->size(), s.size(), path.size()}) && (*prev)[lcp] == s[lcp]) ++lcp;
    }
    while (path.size() > lcp) {
      skip_[size_t(path.back())] = int32_t(byte_.size());
      path.pop_back();
    }
    for (size_t k = lcp; k < s.size(); ++k) {
      path.push_back(int32_t(byte_.size()));
      byte_.push_back(uint8_t(s[k]));
      depth_.push_back(uint16_t(k + 1));
      skip_.push_back(0);
      tok_begin_.push_back(int32_t(ids_.size()));
    }
    ids_.push_back(id);  // at the node that ends s: the last one created, or s's duplicate's
    max_depth_ = std::max(max_depth_, s.size());
    prev = &s;
  }
  for (int32_t node : path) skip_[size_t(node)] = int32_t(byte_.size());
  tok_begin_.push_back(int32_t(ids_.size()));
}

namespace {

constexpr int32_t kUnknown = -2;  // a transition not computed yet
// Cache bounds per generation; past them the cache restarts from the current state.
constexpr size_t kMaxStates = 1 << 14;  // 16 MiB of transitions
constexpr size_t kMaxFrames = 1 << 22;

uint64_t hash_state(std::span<const int32_t> tops, bool accepting) {
  uint64_t h = accepting ? 0x9e3779b97f4a7c15ULL : 0x7f4a7c159e3779b9ULL;
  for (int32_t t : tops) h = (h ^ uint32_t(t)) * 0x100000001b3ULL + (h >> 29);
  return h;
}

}  // namespace

TokenMask::TokenMask(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenTrie> trie)
    : g_(std::move(g)), trie_(std::move(trie)) {
  QWEN_CHECK(!trie_->eog().empty(),
             "grammar: the vocabulary has no end-of-generation token to end the output with");
  depth_state_.resize(trie_->max_depth_ + 1);
  std::vector<int32_t> tops;
  const bool accepting = grammar_start(*g_, arena_, tops);
  current_ = intern(std::move(tops), accepting);
}

int32_t TokenMask::intern(std::vector<int32_t> tops, bool accepting) {
  if (states_.size() * 2 >= state_table_.size()) {
    state_table_.assign(std::max<size_t>(256, state_table_.size() * 2), {0, -1});
    const size_t mask = state_table_.size() - 1;
    for (size_t i = 0; i < states_.size(); ++i) {
      const uint64_t h = hash_state(states_[i].tops, states_[i].accepting);
      size_t k = h & mask;
      while (state_table_[k].second >= 0) k = (k + 1) & mask;
      state_table_[k] = {h, int32_t(i)};
    }
  }
  const uint64_t h = hash_state(tops, accepting);
  const size_t mask = state_table_.size() - 1;
  size_t k = h & mask;
  for (; state_table_[k].second >= 0; k = (k + 1) & mask) {
    const State& s = states_[size_t(state_table_[k].second)];
    if (state_table_[k].first == h && s.accepting == accepting && s.tops == tops)
      return state_table_[k].second;
  }
  state_table_[k] = {h, int32_t(states_.size())};
  states_.push_back({std::move(tops), accepting});
  trans_.resize(states_.size() * 256, kUnknown);
  return int32_t(states_.size() - 1);
}

int32_t TokenMask::next(int32_t state, uint8_t b) {
  int32_t& cached = trans_[size_t(state) * 256 + b];
  if (cached != kUnknown) return cached;
  scratch_.clear();
  const bool accepting = grammar_step(*g_, arena_, states_[size_t(state)].tops, b, scratch_);
  const int32_t to = scratch_.empty() && !accepting ? -1 : intern(scratch_, accepting);
  trans_[size_t(state) * 256 + b] = to;  // intern() may have moved trans_: index again
  return to;
}

void TokenMask::compact() {
  if (states_.size() < kMaxStates && arena_.size() < kMaxFrames) return;
  // Rebuild the current state alone in a fresh arena (its stacks copied frame by frame).
  const State cur = states_[size_t(current_)];
  FrameArena fresh;
  std::vector<int32_t> tops;
  for (int32_t t : cur.tops) {
    std::vector<int32_t> stack;
    for (int32_t f = t; f >= 0; f = arena_[f].parent) stack.push_back(arena_[f].pos);
    int32_t parent = -1;
    for (auto it = stack.rbegin(); it != stack.rend(); ++it) parent = fresh.push(*it, parent);
    tops.push_back(parent);
  }
  std::sort(tops.begin(), tops.end());
  arena_ = std::move(fresh);
  states_.clear();
  state_table_.clear();
  trans_.clear();
  current_ = intern(std::move(tops), cur.accepting);
}

void TokenMask::allowed(std::vector<uint8_t>& allowed) {
  const TokenTrie& t = *trie_;
  allowed.assign(size_t(t.n_vocab()), 0);
  bool any = false;
  if (!ended_) {
    compact();
    depth_state_[0] = current_;
    // Preorder walk: a node at depth d steps from the state at depth d - 1; a dead node skips its
    // whole subtree, and a node whose text is complete with nothing left to read skips it too.
    for (size_t i = 0; i < t.byte_.size();) {
      const size_t d = t.depth_[i];
      const int32_t s = next(depth_state_[d - 1], t.byte_[i]);
      if (s < 0) {
        i = size_t(t.skip_[i]);
        continue;
      }
      for (int32_t k = t.tok_begin_[i]; k < t.tok_begin_[i + 1]; ++k) allowed[size_t(t.ids_[size_t(k)])] = 1;
      any = true;
      if (states_[size_t(s)].tops.empty()) {
        i = size_t(t.skip_[i]);
        continue;
      }
      depth_state_[d] = s;
      ++i;
    }
    if (complete()) {
      for (int32_t id : t.eog()) allowed[size_t(id)] = 1;
      any |= !t.eog().empty();
    }
  }
  QWEN_CHECK(any, ended_ ? "grammar: the output already ended"
                         : "grammar: no token of the vocabulary can continue the output");
}

void TokenMask::apply(std::span<float> logits) {
  QWEN_CHECK(logits.size() == size_t(trie_->n_vocab()), "grammar: ", logits.size(),
             " logits for a vocabulary of ", trie_->n_vocab());
  allowed(allowed_);
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!allowed_[i]) logits[i] = -std::numeric_limits<float>::infinity();
  }
}

void TokenMask::accept(int32_t id) {
  const TokenTrie& t = *trie_;
  QWEN_CHECK(id >= 0 && id < t.n_vocab(), "grammar: token ", id, " outside the vocabulary");
  QWEN_CHECK(!ended_, "grammar: token ", id, " after the end of the output");
  if (std::binary_search(t.eog().begin(), t.eog().end(), id)) {
    QWEN_CHECK(complete(), "grammar: end of generation before the output is complete");
    ended_ = true;
    return;
  }
  const std::string& b = t.bytes(id);
  int32_t s = b.empty() ? -1 : current_;
  for (size_t k = 0; k < b.size() && s >= 0; ++k) s = next(s, uint8_t(b[k]));
  QWEN_CHECK(s >= 0, "grammar: token ", id,
             " does not continue the output (were all allowed tokens banned by ", "logit_bias?)");
  current_ = s;
}

}  // namespace qwen
