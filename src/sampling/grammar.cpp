#include "sampling/grammar.h"

#include <algorithm>

#include "util/check.h"

namespace qwen {

// ---- building --------------------------------------------------------------------------------

int32_t Grammar::new_rule() {
  QWEN_ASSERT(root_ < 0);
  rules_.emplace_back();
  return int32_t(rules_.size() - 1);
}

void Grammar::add_alt(int32_t rule, std::vector<Sym> alt) {
  QWEN_ASSERT(root_ < 0 && rule >= 0 && size_t(rule) < rules_.size());
  n_symbols_ += alt.size() + 1;
  rules_[size_t(rule)].push_back(std::move(alt));
}

Grammar::Sym Grammar::bytes(const ByteSet& set) {
  auto it = std::find(sets_.begin(), sets_.end(), set);
  if (it == sets_.end()) it = sets_.insert(sets_.end(), set);
  return {false, int32_t(it - sets_.begin())};
}

int32_t Grammar::literal(std::string_view s) {
  std::vector<Sym> alt;
  for (char c : s) alt.push_back(byte(uint8_t(c)));
  const int32_t r = new_rule();
  add_alt(r, std::move(alt));
  return r;
}

int32_t Grammar::repeat(Sym item, int min, int max, const Sym* sep) {
  QWEN_ASSERT(min >= 0 && (max < 0 || max >= min));
  // seq repeated lo..hi times (hi < 0: unbounded): seq x lo, then either a right-recursive star
  // (a tail call, so the recogniser's stacks do not grow with the count) or hi - lo nested
  // optional levels.
  auto times = [&](const std::vector<Sym>& seq, int lo, int hi) {
    int32_t rest = new_rule();
    add_alt(rest, {});
    if (hi < 0) {
      std::vector<Sym> again = seq;
      again.push_back(ref(rest));
      add_alt(rest, std::move(again));
    } else {
      for (int k = 0; k < hi - lo; ++k) {
        const int32_t level = new_rule();
        add_alt(level, {});
        std::vector<Sym> more = seq;
        more.push_back(ref(rest));
        add_alt(level, std::move(more));
        rest = level;
      }
    }
    std::vector<Sym> body;
    for (int k = 0; k < lo; ++k) body.insert(body.end(), seq.begin(), seq.end());
    body.push_back(ref(rest));
    const int32_t r = new_rule();
    add_alt(r, std::move(body));
    return r;
  };
  if (sep == nullptr) return times({item}, min, max);
  const int32_t r = new_rule();
  if (min == 0) add_alt(r, {});
  if (max != 0) {
    const int32_t tail = times({*sep, item}, std::max(min - 1, 0), max < 0 ? -1 : max - 1);
    add_alt(r, {item, ref(tail)});
  }
  return r;
}

void Grammar::finish(int32_t root) {
  QWEN_ASSERT(root_ < 0 && root >= 0 && size_t(root) < rules_.size());
  root_ = root;
  // Position 0 is the start: [root, end], so the initial state is the expansion of position 0.
  elems_ = {{kRule, root}, {kEnd, 0}};
  alt_starts_.resize(rules_.size());
  for (size_t r = 0; r < rules_.size(); ++r) {
    for (const std::vector<Sym>& alt : rules_[r]) {
      alt_starts_[r].push_back(int32_t(elems_.size()));
      for (const Sym& s : alt) elems_.push_back({s.is_rule ? kRule : kBytes, s.id});
      elems_.push_back({kEnd, 0});
    }
  }
  rules_.clear();
}

bool Grammar::matches(std::string_view s) const {
  // A non-owning pointer: the state lives only inside this call.
  GrammarState st(std::shared_ptr<const Grammar>(std::shared_ptr<const Grammar>(), this));
  return st.advance(s) && st.complete();
}

// ---- recogniser ------------------------------------------------------------------------------

namespace {

uint64_t mix(uint64_t h) {  // splitmix64's finaliser
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

// Grammars are compiled without epsilon cycles; this bounds the expansion if one slipped in.
constexpr int kMaxExpandDepth = 2000;

// Expands the stack (pos, parent) until each resulting stack's top is at a byte set, appending
// those tops; returns whether a stack emptied (the sentence can end here).
bool expand(const Grammar& g, FrameArena& arena, std::vector<int32_t>& tops, int32_t pos, int32_t parent,
            int depth = 0) {
  QWEN_CHECK(depth < kMaxExpandDepth, "grammar: a rule expands into itself without reading a byte");
  const Grammar::Elem& e = g.elem(pos);
  switch (e.kind) {
    case Grammar::kBytes:
      tops.push_back(arena.push(pos, parent));
      return false;
    case Grammar::kEnd: {
      if (parent < 0) return true;
      const FrameArena::Frame p = arena[parent];
      if (g.elem(p.pos).kind == Grammar::kBytes) {
        tops.push_back(parent);
        return false;
      }
      return expand(g, arena, tops, p.pos, p.parent, depth + 1);
    }
    case Grammar::kRule: {
      // The caller's continuation; at the end of an alternative it is the parent itself (a tail
      // call), so repetition by right recursion keeps the stack depth constant.
      int32_t cont = parent;
      if (g.elem(pos + 1).kind != Grammar::kEnd) cont = arena.push(pos + 1, parent);
      bool accepting = false;
      for (int32_t alt : g.alts(e.arg)) accepting |= expand(g, arena, tops, alt, cont, depth + 1);
      return accepting;
    }
  }
  return false;
}

void sort_unique(std::vector<int32_t>& v, size_t from) {
  std::sort(v.begin() + ptrdiff_t(from), v.end());
  v.erase(std::unique(v.begin() + ptrdiff_t(from), v.end()), v.end());
}

}  // namespace

int32_t FrameArena::push(int32_t pos, int32_t parent) {
  if (frames_.size() * 2 >= table_.size()) {  // grow: keep the load under 1/2
    table_.assign(std::max<size_t>(1024, table_.size() * 2), -1);
    const size_t mask = table_.size() - 1;
    for (size_t i = 0; i < frames_.size(); ++i) {
      size_t h = mix(uint64_t(uint32_t(frames_[i].pos)) << 32 | uint32_t(frames_[i].parent)) & mask;
      while (table_[h] >= 0) h = (h + 1) & mask;
      table_[h] = int32_t(i);
    }
  }
  const size_t mask = table_.size() - 1;
  size_t h = mix(uint64_t(uint32_t(pos)) << 32 | uint32_t(parent)) & mask;
  for (; table_[h] >= 0; h = (h + 1) & mask) {
    const Frame& f = frames_[size_t(table_[h])];
    if (f.pos == pos && f.parent == parent) return table_[h];
  }
  table_[h] = int32_t(frames_.size());
  frames_.push_back({pos, parent});
  return table_[h];
}

void FrameArena::clear() {
  frames_.clear();
  table_.clear();
}

bool grammar_start(const Grammar& g, FrameArena& arena, std::vector<int32_t>& tops) {
  const size_t from = tops.size();
  const bool accepting = expand(g, arena, tops, 0, -1);
  sort_unique(tops, from);
  return accepting;
}

bool grammar_step(const Grammar& g, FrameArena& arena, std::span<const int32_t> tops, uint8_t b,
                  std::vector<int32_t>& out) {
  const size_t from = out.size();
  bool accepting = false;
  for (int32_t t : tops) {
    const FrameArena::Frame f = arena[t];
    if (g.set(g.elem(f.pos).arg).has(b)) accepting |= expand(g, arena, out, f.pos + 1, f.parent);
  }
  sort_unique(out, from);
  QWEN_CHECK(out.size() - from <= GrammarState::kMaxStacks, "grammar: more than ", GrammarState::kMaxStacks,
             " parses are alive at once (the schema is too ambiguous)");
  return accepting;
}

namespace {

std::vector<std::vector<int32_t>> unpack(const FrameArena& arena, std::span<const int32_t> tops) {
  std::vector<std::vector<int32_t>> stacks;
  for (int32_t t : tops) {
    std::vector<int32_t> stack;
    for (int32_t f = t; f >= 0; f = arena[f].parent) stack.push_back(arena[f].pos);
    std::reverse(stack.begin(), stack.end());
    stacks.push_back(std::move(stack));
  }
  return stacks;
}

}  // namespace

GrammarState::GrammarState(std::shared_ptr<const Grammar> g) : g_(std::move(g)) {
  QWEN_ASSERT(g_->root() >= 0);
  FrameArena arena;
  std::vector<int32_t> tops;
  accepting_ = grammar_start(*g_, arena, tops);
  stacks_ = unpack(arena, tops);
}

bool GrammarState::advance(std::string_view bytes) {
  FrameArena arena;
  std::vector<int32_t> tops, next;
  for (const std::vector<int32_t>& stack : stacks_) {
    int32_t parent = -1;
    for (int32_t pos : stack) parent = arena.push(pos, parent);
    tops.push_back(parent);
  }
  bool accepting = accepting_;
  for (char c : bytes) {
    if (tops.empty()) return false;  // every stack ended before this byte
    next.clear();
    accepting = grammar_step(*g_, arena, tops, uint8_t(c), next);
    tops.swap(next);
    if (tops.empty() && !accepting) return false;
  }
  stacks_ = unpack(arena, tops);
  accepting_ = accepting;
  return true;
}

}  // namespace qwen
