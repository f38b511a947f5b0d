// SentencePiece-style BPE ("llama" tokenizer model): merges by piece score with byte fallback,
// as sentencepiece's bpe_model and llama.cpp's SPM tokenizer do.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qwen::spm {

// std::string keys looked up by string_view without a temporary string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct Model {
  PieceMap pieces;                    // mergeable pieces (NORMAL, USER_DEFINED) -> id
  std::vector<float> scores;          // [n_vocab] higher merges first
  std::array<int32_t, 256> byte_ids;  // <0xAB> token of each byte, -1 when absent
  int32_t unk_id = -1;
};

// "▁" (U+2581), SentencePiece's visible space.
inline constexpr std::string_view kSpace = "\xE2\x96\x81";

// Encodes already-escaped text (spaces replaced by "▁", dummy prefix added by the caller):
// starts from UTF-8 characters, repeatedly merges the adjacent pair whose concatenation is the
// highest-scoring piece (leftmost among equal scores), then maps each symbol to its piece, or to
// byte tokens (unk when the model has no byte tokens). Throws qwen::Error when neither exists.
void encode(const Model& model, std::string_view text, std::vector<int32_t>& out);

}  // namespace qwen::spm
