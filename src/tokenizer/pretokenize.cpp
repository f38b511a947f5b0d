#include "tokenizer/pretokenize.h"

#include "tokenizer/unicode_tables.h"
#include "util/check.h"

namespace qwen::pretok {

namespace {

using unicode_data::kLetter;
using unicode_data::kNumber;
using unicode_data::kSpace;

// The text one matcher scans: code points with their class flags, positions in [0, n).
struct Text {
  const uint32_t* cp;
  const uint8_t* fl;
  size_t n;
  bool letter(size_t i) const { return i < n && (fl[i] & kLetter); }
  bool number(size_t i) const { return i < n && (fl[i] & kNumber); }
  bool space(size_t i) const { return i < n && (fl[i] & kSpace); }
  // [^\s\p{L}\p{N}]
  bool other(size_t i) const { return i < n && fl[i] == 0; }
  bool crlf(size_t i) const { return i < n && (cp[i] == '\r' || cp[i] == '\n'); }
};

// Folds a code point for the contraction alternatives. Under (?i) Oniguruma also matches U+017F
// (LATIN SMALL LETTER LONG S) for 's'; no other non-ASCII code point folds to t, r, e, v, m, l, d.
uint32_t fold(uint32_t c, bool ignore_case) {
  if (!ignore_case) return c;
  if (c >= 'A' && c <= 'Z') return c + 32;
  return c == 0x17F ? 's' : c;
}

// 's|'t|'re|'ve|'m|'ll|'d: returns the match length, 0 when none.
size_t contraction(const Text& t, size_t i, bool ignore_case) {
  if (t.cp[i] != '\'' || i + 1 >= t.n) return 0;
  const uint32_t a = fold(t.cp[i + 1], ignore_case);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= t.n) return 0;
  const uint32_t b = fold(t.cp[i + 2], ignore_case);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// End of the maximal whitespace run starting at i.
size_t space_run_end(const Text& t, size_t i) {
  while (t.space(i)) ++i;
  return i;
}

// \s+(?!\S)|\s+ at a whitespace position i: the run, minus its last character when a
// non-space follows and the run is longer than one.
size_t trailing_space(const Text& t, size_t i) {
  const size_t k = space_run_end(t, i);
  return k < t.n && k - i >= 2 ? k - 1 : k;
}

// One match of the qwen2 / llama3 regex at i; returns its end.
size_t match_llama3_like(const Text& t, size_t i, size_t max_digits) {
  if (size_t len = contraction(t, i, true)) return i + len;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t j = i;
  if (!t.letter(j) && !t.number(j) && !t.crlf(j) && t.letter(j + 1)) ++j;
  if (t.letter(j)) {
    while (t.letter(j)) ++j;
    return j;
  }
  // \p{N} or \p{N}{1,3}
  if (t.number(i)) {
    j = i;
    while (j - i < max_digits && t.number(j)) ++j;
    return j;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  j = i;
  if (t.cp[j] == ' ' && t.other(j + 1)) ++j;
  if (t.other(j)) {
    while (t.other(j)) ++j;
    while (t.crlf(j)) ++j;
    return j;
  }
  // Only whitespace is left here. \s*[\r\n]+ ends after the run's last line break.
  const size_t k = space_run_end(t, i);
  for (size_t r = k; r > i; --r) {
    if (t.crlf(r - 1)) return r;
  }
  return trailing_space(t, i);
}

// One match of the GPT-2 regex at i; returns its end.
size_t match_gpt2(const Text& t, size_t i) {
  if (size_t len = contraction(t, i, false)) return i + len;
  const size_t j = t.cp[i] == ' ' ? i + 1 : i;  // the optional leading space of 3 alternatives
  if (t.letter(j)) {
    size_t k = j;
    while (t.letter(k)) ++k;
    return k;
  }
  if (t.number(j)) {
    size_t k = j;
    while (t.number(k)) ++k;
    return k;
  }
  if (t.other(j)) {
    size_t k = j;
    while (t.other(k)) ++k;
    return k;
  }
  return trailing_space(t, i);
}

void split_text(Kind kind, const Text& t, uint32_t base, std::vector<uint32_t>& ends) {
  for (size_t i = 0; i < t.n;) {
    size_t e = 0;
    switch (kind) {
      case Kind::kQwen2:
        e = match_llama3_like(t, i, 1);
        break;
      case Kind::kLlama3:
        e = match_llama3_like(t, i, 3);
        break;
      case Kind::kGpt2:
      case Kind::kSmollm:
        e = match_gpt2(t, i);
        break;
    }
    QWEN_ASSERT(e > i && e <= t.n);
    ends.push_back(base + static_cast<uint32_t>(e));
    i = e;
  }
}

}  // namespace

Kind from_name(std::string_view pre, std::string_view source) {
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return Kind::kQwen2;
  if (pre == "llama-bpe" || pre == "llama3") return Kind::kLlama3;
  if (pre == "smollm") return Kind::kSmollm;
  if (pre == "gpt2" || pre == "default" || pre.empty()) return Kind::kGpt2;
  QWEN_FAIL(source, ": tokenizer.ggml.pre '", pre,
            "' is not supported (supported: qwen2, llama-bpe, smollm, gpt2, default)");
}

void split(Kind kind, std::span<const uint32_t> cps, std::span<const uint8_t> flags,
           std::vector<uint32_t>& ends) {
  QWEN_ASSERT(cps.size() == flags.size());
  if (kind != Kind::kSmollm) {
    split_text(kind, Text{cps.data(), flags.data(), cps.size()}, 0, ends);
    return;
  }
  // Digits first: each \p{N} is a piece, and the text between digits is split by the GPT-2
  // regex as a string of its own (its look-ahead sees the end of that string, not the digit).
  size_t start = 0;
  for (size_t i = 0; i <= cps.size(); ++i) {
    if (i < cps.size() && !(flags[i] & kNumber)) continue;
    if (i > start) {
      split_text(Kind::kGpt2, Text{cps.data() + start, flags.data() + start, i - start},
                 static_cast<uint32_t>(start), ends);
    }
    if (i < cps.size()) ends.push_back(static_cast<uint32_t>(i + 1));
    start = i + 1;
  }
}

}  // namespace qwen::pretok
