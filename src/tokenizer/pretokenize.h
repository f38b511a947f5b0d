// Pre-tokenizers: split normalised text into the pieces BPE runs on, exactly as the HF regexes
// (Oniguruma, leftmost alternative wins) do. Hand-written matchers, one per regex:
//
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   qwen2:  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*
//           |\s*[\r\n]+|\s+(?!\S)|\s+
//   llama3: as qwen2 with \p{N}{1,3} ("llama-bpe")
//   smollm: every \p{N} is its own piece (HF Digits(individual_digits)), the rest split as gpt2
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace qwen::pretok {

enum class Kind { kGpt2, kQwen2, kLlama3, kSmollm };

// Maps tokenizer.ggml.pre to a splitter; throws qwen::Error naming `source` and the value.
Kind from_name(std::string_view pre, std::string_view source);

// Appends to `ends` the end index (exclusive, in code points) of each piece of `cps`, in order;
// the pieces tile the input. `flags` holds unicode::cp_flags of each code point.
void split(Kind kind, std::span<const uint32_t> cps, std::span<const uint8_t> flags,
           std::vector<uint32_t>& ends);

}  // namespace qwen::pretok
