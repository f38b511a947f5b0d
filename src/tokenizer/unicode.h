// UTF-8 <-> code points, code point classes (\p{L}, \p{N}, \s) and NFC normalisation, over the
// tables in unicode_tables.cpp.
//
// Invalid UTF-8 is never rejected or replaced: each invalid byte B decodes to the pseudo code
// point kInvalidBase + B (outside Unicode), which is classified as "other" (not a letter, number
// or space), is a starter for NFC, and encodes back to the byte B. So encode/decode round-trips
// arbitrary bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qwen::unicode {

constexpr uint32_t kInvalidBase = 0x110000;

// Decodes one UTF-8 sequence at s[i] (overlong forms, surrogates and values above U+10FFFF are
// invalid); returns the code point and advances i.
uint32_t next_cp(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);
// Length of the longest prefix of s that is complete, valid UTF-8 (for streaming output).
size_t complete_utf8_prefix(std::string_view s);
// Replaces each invalid byte with U+FFFD.
std::string sanitize_utf8(std::string_view s);

// ClassFlags bits (unicode_data::kLetter / kNumber / kSpace); 0 for everything else.
uint8_t cp_flags(uint32_t cp);
inline bool is_letter(uint32_t cp) {
  return cp_flags(cp) & 1;
}
inline bool is_number(uint32_t cp) {
  return cp_flags(cp) & 2;
}
inline bool is_space(uint32_t cp) {
  return cp_flags(cp) & 4;
}

// Unicode Normalization Form C (canonical decomposition, canonical ordering, canonical
// composition incl. Hangul).
std::string nfc(std::string_view s);

}  // namespace qwen::unicode
