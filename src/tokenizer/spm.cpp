#include "tokenizer/spm.h"

#include <queue>

#include "tokenizer/unicode.h"
#include "util/check.h"

namespace qwen::spm {

void encode(const Model& model, std::string_view text, std::vector<int32_t>& out) {
  // Symbols: byte ranges [start, start + len) of text, in a linked list; merged-away ones have
  // len == 0.
  struct Symbol {
    uint32_t start, len;
    int prev, next;
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    unicode::next_cp(text, i);
    const int k = static_cast<int>(sym.size());
    sym.push_back({static_cast<uint32_t>(at), static_cast<uint32_t>(i - at), k - 1, k + 1});
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  struct Bigram {
    float score;
    int left, right;
    uint32_t len;  // combined length when queued; a change means the entry is stale
    bool operator<(const Bigram& o) const { return score != o.score ? score < o.score : left > o.left; }
  };
  std::priority_queue<Bigram> heap;
  auto push = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const std::string_view piece = text.substr(sym[l].start, sym[l].len + sym[r].len);
    auto it = model.pieces.find(piece);
    if (it == model.pieces.end()) return;
    heap.push({model.scores[it->second], l, r, static_cast<uint32_t>(piece.size())});
  };
  for (size_t i = 0; i + 1 < sym.size(); ++i) push(static_cast<int>(i), static_cast<int>(i + 1));
  while (!heap.empty()) {
    const Bigram b = heap.top();
    heap.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    if (l.len == 0 || r.len == 0 || l.next != b.right || l.len + r.len != b.len) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    push(l.prev, b.left);
    push(b.left, l.next);
  }

  for (int i = 0; i >= 0; i = sym[i].next) {
    const std::string_view piece = text.substr(sym[i].start, sym[i].len);
    auto it = model.pieces.find(piece);
    if (it != model.pieces.end()) {
      out.push_back(it->second);
      continue;
    }
    // A character with no piece of its own: one token per UTF-8 byte, else unk.
    bool bytes_ok = true;
    for (unsigned char c : piece) bytes_ok = bytes_ok && model.byte_ids[c] >= 0;
    if (bytes_ok) {
      for (unsigned char c : piece) out.push_back(model.byte_ids[c]);
    } else {
      QWEN_CHECK(model.unk_id >= 0,
                 "SentencePiece vocabulary has neither a piece, byte tokens nor an unknown token for '",
                 std::string(piece), "'");
      out.push_back(model.unk_id);
    }
  }
}

}  // namespace qwen::spm
