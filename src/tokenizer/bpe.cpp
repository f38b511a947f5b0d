#include "tokenizer/bpe.h"

#include <queue>

#include "tokenizer/unicode.h"

namespace qwen::bpe {

const std::array<uint32_t, 256>& byte_to_cp() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

bool byte_level_decode(std::string_view text, std::string& out) {
  // The alphabet spans U+0021..U+0143; a direct inverse table covers it.
  static const std::array<int16_t, 0x144> inverse = [] {
    std::array<int16_t, 0x144> inv{};
    inv.fill(-1);
    const auto& fwd = byte_to_cp();
    for (int b = 0; b < 256; ++b) inv[fwd[b]] = static_cast<int16_t>(b);
    return inv;
  }();
  for (size_t i = 0; i < text.size();) {
    const uint32_t cp = unicode::next_cp(text, i);
    if (cp >= inverse.size() || inverse[cp] < 0) return false;
    out.push_back(static_cast<char>(inverse[cp]));
  }
  return true;
}

void Merges::add(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  // A pair listed twice keeps its first (lowest) rank, as HF does.
  table_.emplace(key(left, right), Entry{rank, merged});
}

void merge(const Merges& merges, std::vector<int32_t>& symbols, std::vector<int32_t>& out) {
  const int n = static_cast<int>(symbols.size());
  if (n == 1) {
    out.push_back(symbols[0]);
    return;
  }
  // Linked list over symbol slots; a slot merged into its left neighbour gets next == -2.
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;  // left slot
    int32_t left, right, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int pos) {
    const int r = next[pos];
    if (pos < 0 || r < 0) return;
    int32_t rank, merged;
    if (merges.find(symbols[pos], symbols[r], rank, merged)) {
      heap.push({rank, pos, symbols[pos], symbols[r], merged});
    }
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    // Stale entries: either side was merged since. A slot that grew has a different id (token
    // ids map to distinct byte strings), so comparing ids detects every change.
    const int r = next[c.pos];
    if (r < 0 || symbols[c.pos] != c.left || symbols[r] != c.right) continue;
    symbols[c.pos] = c.merged;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    next[r] = -2;
    push(prev[c.pos]);
    push(c.pos);
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(symbols[i]);
}

}  // namespace qwen::bpe
