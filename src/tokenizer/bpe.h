// Byte-level BPE core: the GPT-2 byte <-> unicode alphabet and the merge loop.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qwen::bpe {

// GPT-2's reversible byte -> code point map: printable Latin-1 bytes map to themselves, the
// other 68 bytes to U+0100.. in byte order, so every byte string is a printable token string.
const std::array<uint32_t, 256>& byte_to_cp();
// Inverse of byte_to_cp; returns false when `text` has a code point outside the alphabet.
bool byte_level_decode(std::string_view text, std::string& out);

// Merge table over token ids: (left, right) -> (rank, merged id).
class Merges {
 public:
  void reserve(size_t n) { table_.reserve(n); }
  void add(int32_t left, int32_t right, int32_t rank, int32_t merged);
  // Returns false when (left, right) is not a merge.
  bool find(int32_t left, int32_t right, int32_t& rank, int32_t& merged) const {
    auto it = table_.find(key(left, right));
    if (it == table_.end()) return false;
    rank = it->second.rank;
    merged = it->second.merged;
    return true;
  }
  size_t size() const { return table_.size(); }

 private:
  struct Entry {
    int32_t rank, merged;
  };
  static uint64_t key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  std::unordered_map<uint64_t, Entry> table_;
};

// Applies merges to `symbols` (initial token ids, one per byte of a piece) lowest rank first,
// leftmost first among equal ranks, as HF tokenizers does; appends the resulting ids to `out`.
// Uses a binary heap over adjacent pairs and a linked list of symbols: O(n log n) per piece.
void merge(const Merges& merges, std::vector<int32_t>& symbols, std::vector<int32_t>& out);

}  // namespace qwen::bpe
