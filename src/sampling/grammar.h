// Constrained decoding: a context-free grammar over bytes (rules of alternatives of byte sets and
// rule references, no left recursion), a pushdown recogniser for it, and a token mask over a
// vocabulary. The recogniser keeps every parse alive at once (a set of stacks: a nondeterministic
// top-down recogniser that expands every alternative), so grammars compiled from anyOf over
// overlapping branches need no backtracking. json_schema.h compiles JSON schemas into such grammars.
//
// Masking: the vocabulary's byte strings form a trie in preorder; the recogniser walks it from the
// current state and skips every subtree whose prefix is already dead, so the cost is the number of
// trie nodes still viable, not the vocabulary times the token length; and each state's byte
// transitions are cached, so a node costs one lookup once its state has been met.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qwen {

class Tokenizer;

struct ByteSet {
  std::array<uint64_t, 4> bits{};
  ByteSet& add(uint8_t b) {
    bits[b >> 6] |= uint64_t(1) << (b & 63);
    return *this;
  }
  ByteSet& add_range(uint8_t lo, uint8_t hi) {
    for (int b = lo; b <= hi; ++b) add(uint8_t(b));
    return *this;
  }
  bool has(uint8_t b) const { return (bits[b >> 6] >> (b & 63)) & 1; }
  bool operator==(const ByteSet&) const = default;
};

class Grammar {
 public:
  // A symbol of an alternative while building: one byte out of a set, or a rule.
  struct Sym {
    bool is_rule;
    int32_t id;  // rule id, or index into the grammar's byte sets
  };

  // ---- building ----
  int32_t new_rule();  // a rule with no alternatives yet (so rules can refer to each other)
  void add_alt(int32_t rule, std::vector<Sym> alt);  // an empty alt matches the empty string
  Sym bytes(const ByteSet& set);                     // interned
  Sym byte(uint8_t b) { return bytes(ByteSet().add(b)); }
  static Sym ref(int32_t rule) { return {true, rule}; }
  int32_t literal(std::string_view s);  // a rule matching exactly s
  // A rule matching `item` between min and max times (max < 0: unbounded), optionally with a
  // separator symbol between items. Bounded repeats are unrolled into max - min optional levels.
  int32_t repeat(Sym item, int min, int max, const Sym* sep = nullptr);
  // Fixes the start rule and lays the rules out for the recogniser; no building after this.
  void finish(int32_t root);

  // ---- the laid-out form ----
  enum Kind : uint8_t { kBytes, kRule, kEnd };
  struct Elem {
    Kind kind;
    int32_t arg;  // kBytes: byte set index; kRule: rule id
  };
  int32_t root() const { return root_; }
  const Elem& elem(int32_t pos) const { return elems_[size_t(pos)]; }
  const ByteSet& set(int32_t i) const { return sets_[size_t(i)]; }
  std::span<const int32_t> alts(int32_t rule) const { return alt_starts_[size_t(rule)]; }
  size_t n_rules() const { return rules_.size(); }
  size_t n_symbols() const { return n_symbols_; }  // in every alternative added so far

  // Whether s as a whole is a sentence of the grammar (for tests and validation).
  bool matches(std::string_view s) const;

 private:
  std::vector<std::vector<std::vector<Sym>>> rules_;  // building form
  std::vector<ByteSet> sets_;
  std::vector<Elem> elems_;                       // every alternative, each closed by kEnd
  std::vector<std::vector<int32_t>> alt_starts_;  // per rule: positions of its alternatives
  int32_t root_ = -1;
  size_t n_symbols_ = 0;
};

// Recogniser frames: (grammar position, parent frame), -1 being the bottom. Frames are immutable
// and interned, so two stacks are equal exactly when their top frames are the same index.
class FrameArena {
 public:
  struct Frame {
    int32_t pos, parent;
  };
  int32_t push(int32_t pos, int32_t parent);  // the index of the equal frame, made if new
  const Frame& operator[](int32_t i) const { return frames_[size_t(i)]; }
  size_t size() const { return frames_.size(); }
  void clear();

 private:
  std::vector<Frame> frames_;
  std::vector<int32_t> table_;  // open addressing over frames_, -1 = empty
};

// The start of the grammar: appends the top frame of every stack (each at a byte set) to `tops`
// and returns whether the empty string is a sentence.
bool grammar_start(const Grammar& g, FrameArena& arena, std::vector<int32_t>& tops);
// One byte from the stacks `tops`: appends the new tops (sorted, unique) to `out` and returns
// whether some stack ended (the text is complete after b).
bool grammar_step(const Grammar& g, FrameArena& arena, std::span<const int32_t> tops, uint8_t b,
                  std::vector<int32_t>& out);

// The recogniser's state as plain stacks of positions (bottom to top): cheap to copy, the oracle
// that TokenMask's cached walk is tested against.
class GrammarState {
 public:
  explicit GrammarState(std::shared_ptr<const Grammar> g);
  // The state after `bytes` from the current one; false (state unchanged) when they lead nowhere.
  bool advance(std::string_view bytes);
  bool complete() const { return accepting_; }  // the bytes so far form a whole sentence
  const Grammar& grammar() const { return *g_; }
  const std::vector<std::vector<int32_t>>& stacks() const { return stacks_; }
  // Parses alive at once, at most: each costs work on every byte of every mask, and real schemas
  // keep a handful (anyOf branches sharing a prefix).
  static constexpr size_t kMaxStacks = 256;

 private:
  std::shared_ptr<const Grammar> g_;
  std::vector<std::vector<int32_t>> stacks_;  // bottom to top; each top is at a byte set
  bool accepting_ = false;
};

// The vocabulary's byte strings as a preorder trie (built once per tokenizer, shared by every
// request). Normal, byte and added (user-defined) tokens are in it: control tokens are never
// generated under a grammar, except the end-of-generation ids once the output is complete.
class TokenTrie {
 public:
  explicit TokenTrie(const Tokenizer& tok);
  // For tests: token byte strings (an empty string is never allowed) and end-of-generation ids.
  TokenTrie(const std::vector<std::string>& token_bytes, std::vector<int32_t> eog);
  int32_t n_vocab() const { return int32_t(bytes_.size()); }
  const std::vector<int32_t>& eog() const { return eog_; }
  // The bytes of token id; empty for a token that is not in the trie.
  const std::string& bytes(int32_t id) const { return bytes_[size_t(id)]; }
  size_t n_nodes() const { return byte_.size(); }

 private:
  friend class TokenMask;
  void build();
  std::vector<std::string> bytes_;
  std::vector<int32_t> eog_;
  // Node i (preorder): its byte, depth (1 for the first byte), the index after its subtree, and
  // the tokens that end at it (ids[tok_begin[i] .. tok_begin[i + 1])).
  std::vector<uint8_t> byte_;
  std::vector<uint16_t> depth_;
  std::vector<int32_t> skip_;
  std::vector<int32_t> tok_begin_;
  std::vector<int32_t> ids_;
  size_t max_depth_ = 0;
};

// Per generation: the grammar state plus the mask over the vocabulary. States (sets of stacks)
// are interned and their byte transitions cached as they are met, a lazily built DFA: inside a
// free string, after most tokens the state is one already seen, so a mask costs one lookup per
// viable trie node.
class TokenMask {
 public:
  TokenMask(std::shared_ptr<const Grammar> g, std::shared_ptr<const TokenTrie> trie);
  // allowed[id] = 1 when token id keeps the output a prefix of a sentence (end-of-generation ids:
  // when the output is complete). Throws qwen::Error when no token is allowed.
  void allowed(std::vector<uint8_t>& allowed);
  // Sets the logit of every token not allowed to -infinity.
  void apply(std::span<float> logits);
  // Advances over a sampled token; throws qwen::Error when the grammar does not allow it.
  void accept(int32_t id);
  bool complete() const { return states_[size_t(current_)].accepting; }
  bool ended() const { return ended_; }  // an end-of-generation token was accepted

 private:
  struct State {
    std::vector<int32_t> tops;  // sorted interned frames
    bool accepting;
  };
  int32_t intern(std::vector<int32_t> tops, bool accepting);
  int32_t next(int32_t state, uint8_t b);  // -1: dead
  // Drops every cached state but the current one when the caches have grown past their bound.
  void compact();

  std::shared_ptr<const Grammar> g_;
  std::shared_ptr<const TokenTrie> trie_;
  FrameArena arena_;
  std::vector<State> states_;
  std::vector<std::pair<uint64_t, int32_t>> state_table_;  // (hash, state), open addressing
  std::vector<int32_t> trans_;                             // [state][256]: kUnknown, -1 or a state
  int32_t current_ = 0;
  bool ended_ = false;
  std::vector<int32_t> depth_state_;  // the walk's state per trie depth
  std::vector<uint8_t> allowed_;
  std::vector<int32_t> scratch_;
};

}  // namespace qwen
