#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>

#include "tokenizer/unicode_tables.h"

namespace qwen::unicode {

namespace ud = unicode_data;

uint32_t next_cp(std::string_view s, size_t& i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int len = 0;
  uint32_t cp = 0, min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    ++i;
    return kInvalidBase + b0;
  }
  if (i + len > s.size()) {
    ++i;
    return kInvalidBase + b0;
  }
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) {
      ++i;
      return kInvalidBase + b0;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return kInvalidBase + b0;
  }
  i += len;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp >= kInvalidBase) {
    out.push_back(static_cast<char>(cp - kInvalidBase));
  } else if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t complete_utf8_prefix(std::string_view s) {
  // Only the last 1..3 bytes can be the start of a sequence that more bytes would complete.
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const auto lead = static_cast<uint8_t>(s[n - back]);
    if ((lead & 0xC0) == 0x80) continue;  // continuation byte: the lead is further back
    const size_t need = lead >= 0xC2 && lead <= 0xDF   ? 2
                        : lead >= 0xE0 && lead <= 0xEF ? 3
                        : lead >= 0xF0 && lead <= 0xF4 ? 4
                                                       : 0;
    if (need <= back) return n;  // complete, or invalid whatever follows
    if (back >= 2) {
      // The second byte's range depends on the lead (no overlongs, surrogates, > U+10FFFF).
      const auto b1 = static_cast<uint8_t>(s[n - back + 1]);
      const uint8_t lo = lead == 0xE0 ? 0xA0 : lead == 0xF0 ? 0x90 : 0x80;
      const uint8_t hi = lead == 0xED ? 0x9F : lead == 0xF4 ? 0x8F : 0xBF;
      if (b1 < lo || b1 > hi) return n;
    }
    return n - back;
  }
  return n;
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const uint32_t cp = next_cp(s, i);
    append_utf8(out, cp >= kInvalidBase ? 0xFFFD : cp);
  }
  return out;
}

namespace {

// ASCII classes, looked up without a search (the bulk of most text).
constexpr std::array<uint8_t, 128> make_ascii_flags() {
  std::array<uint8_t, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) t[c] = ud::kLetter;
    if (c >= '0' && c <= '9') t[c] = ud::kNumber;
    if ((c >= 0x09 && c <= 0x0D) || c == ' ') t[c] = ud::kSpace;
  }
  return t;
}
constexpr std::array<uint8_t, 128> kAsciiFlags = make_ascii_flags();

uint8_t ccc(uint32_t cp) {
  if (cp < 0x300 || cp >= kInvalidBase) return 0;
  const auto* end = ud::kCombiningClasses + ud::kCombiningClassCount;
  const auto* it = std::lower_bound(ud::kCombiningClasses, end, cp,
                                    [](const ud::CombiningClass& c, uint32_t v) { return c.cp < v; });
  return it != end && it->cp == cp ? it->ccc : 0;
}

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount;
constexpr uint32_t kSCount = kLCount * kNCount;

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0 && cp < kInvalidBase) {
    const auto* end = ud::kDecompositions + ud::kDecompositionCount;
    const auto* it = std::lower_bound(ud::kDecompositions, end, cp,
                                      [](const ud::Decomposition& d, uint32_t v) { return d.cp < v; });
    if (it != end && it->cp == cp) {
      out.insert(out.end(), ud::kDecompPool + it->offset, ud::kDecompPool + it->offset + it->length);
      return;
    }
  }
  out.push_back(cp);
}

// Primary composite of (a, b), or 0 when there is none.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const auto* end = ud::kCompositions + ud::kCompositionCount;
  const auto* it = std::lower_bound(ud::kCompositions, end, std::pair{a, b},
                                    [](const ud::Composition& c, const std::pair<uint32_t, uint32_t>& v) {
                                      return c.first != v.first ? c.first < v.first : c.second < v.second;
                                    });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

// NFC quick check: code points that can make a string change under NFC. That is combining marks
// (reordering, composition), characters that compose with what precedes them (U+0300.., Hangul
// V/T jamo, some vowel signs with class 0), and characters whose decomposition does not compose
// back (singletons like U+212B ANGSTROM SIGN, composition exclusions). A string with none of them
// is already NFC, which is the common case and skips the full algorithm.
const std::vector<bool>& nfc_unstable() {
  static const std::vector<bool> table = [] {
    std::vector<bool> t(0x110000, false);
    for (size_t i = 0; i < ud::kCombiningClassCount; ++i) t[ud::kCombiningClasses[i].cp] = true;
    std::vector<bool> composite(0x110000, false);
    for (size_t i = 0; i < ud::kCompositionCount; ++i) {
      t[ud::kCompositions[i].second] = true;
      composite[ud::kCompositions[i].composite] = true;
    }
    for (size_t i = 0; i < ud::kDecompositionCount; ++i) {
      if (!composite[ud::kDecompositions[i].cp]) t[ud::kDecompositions[i].cp] = true;
    }
    for (uint32_t v = kVBase; v < kVBase + kVCount; ++v) t[v] = true;
    for (uint32_t tt = kTBase + 1; tt < kTBase + kTCount; ++tt) t[tt] = true;
    return t;
  }();
  return table;
}

}  // namespace

uint8_t cp_flags(uint32_t cp) {
  if (cp < 128) return kAsciiFlags[cp];
  const auto* end = ud::kClassRanges + ud::kClassRangeCount;
  const auto* it = std::upper_bound(ud::kClassRanges, end, cp,
                                    [](uint32_t v, const ud::ClassRange& r) { return v < r.first; });
  if (it == ud::kClassRanges) return 0;
  --it;
  return cp <= it->last ? it->flags : 0;
}

std::string nfc(std::string_view s) {
  // Every code point below U+0300 is NFC-stable and none of them combines with what precedes it.
  bool all_low = true;
  for (size_t i = 0; i < s.size() && all_low; ++i) all_low = static_cast<uint8_t>(s[i]) < 0xCC;
  if (all_low) return std::string(s);
  const std::vector<bool>& unstable = nfc_unstable();
  bool stable = true;
  for (size_t i = 0; i < s.size() && stable;) {
    const uint32_t cp = next_cp(s, i);
    stable = cp >= kInvalidBase || !unstable[cp];
  }
  if (stable) return std::string(s);

  std::vector<uint32_t> d;
  d.reserve(s.size());
  for (size_t i = 0; i < s.size();) decompose(next_cp(s, i), d);

  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (ccc(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && ccc(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](uint32_t a, uint32_t b) { return ccc(a) < ccc(b); });
    i = j;
  }

  // Canonical composition: a character joins the last starter unless a character between them
  // has class 0 or a class >= its own (is "blocked").
  std::vector<uint32_t> out;
  out.reserve(d.size());
  size_t starter = SIZE_MAX;
  uint8_t last_ccc = 0;
  for (uint32_t cp : d) {
    const uint8_t cc = ccc(cp);
    if (starter != SIZE_MAX) {
      const bool adjacent = out.size() - 1 == starter;
      if (adjacent || (last_ccc != 0 && last_ccc < cc)) {
        if (const uint32_t c = compose(out[starter], cp)) {
          out[starter] = c;
          continue;
        }
      }
    }
    if (cc == 0) starter = out.size();
    out.push_back(cp);
    last_ccc = cc;
  }
  std::string r;
  r.reserve(s.size());
  for (uint32_t cp : out) append_utf8(r, cp);
  return r;
}

}  // namespace qwen::unicode
