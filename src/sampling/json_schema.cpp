#include "sampling/json_schema.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

namespace qwen {

using json = nlohmann::ordered_json;
using Sym = Grammar::Sym;

namespace {

// Keywords that describe a schema without constraining values.
const std::set<std::string> kAnnotations = {"$schema", "$id",      "$comment",   "title",    "description",
                                            "default", "examples", "deprecated", "readOnly", "writeOnly"};
// Keywords this compiler implements; $defs / definitions hold schemas reached through $ref.
const std::set<std::string> kSupported = {"type",
                                          "properties",
                                          "required",
                                          "additionalProperties",
                                          "items",
                                          "minItems",
                                          "maxItems",
                                          "minLength",
                                          "maxLength",
                                          "minimum",
                                          "maximum",
                                          "exclusiveMinimum",
                                          "exclusiveMaximum",
                                          "enum",
                                          "const",
                                          "anyOf",
                                          "oneOf",
                                          "$ref",
                                          "$defs",
                                          "definitions"};
const char* const kNumericBounds[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
// Largest magnitude of a generated integer (and integer part of a number): 16 digits.
constexpr int64_t kMaxInteger = 9999999999999999;
// Nested schemas deeper than this are refused (the compiler recurses once per level).
constexpr int kMaxDepth = 64;

std::string child(const std::string& path, const std::string& key) {
  std::string k;
  for (char c : key) k += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return path + "/" + k;
}

class Compiler {
 public:
  // Rules are added to g, which may hold other rules: $ref resolves inside `root` only.
  Compiler(const json& root, Grammar& g) : root_(root), g_(g) {}

  int32_t run(const json& schema) { return compile(schema, "", 0); }
  int32_t any_object() { return generic_object(); }

 private:
  [[noreturn]] static void unsupported(const std::string& kw, const std::string& path,
                                       const std::string& why) {
    throw SchemaError(str("schema keyword '", kw, "' at '", path.empty() ? "#" : "#" + path, "' ", why), kw,
                      path, true);
  }
  [[noreturn]] static void invalid(const std::string& kw, const std::string& path, const std::string& why) {
    throw SchemaError(str("schema keyword '", kw, "' at '", path.empty() ? "#" : "#" + path, "' ", why), kw,
                      path, false);
  }

  int bound(const json& s, const char* kw, const std::string& path, int dflt) {
    auto it = s.find(kw);
    if (it == s.end()) return dflt;
    if (!it->is_number_integer() || it->get<int64_t>() < 0) {
      invalid(kw, path, str("must be a non-negative integer, got ", it->dump()));
    }
    if (it->get<int64_t>() > kMaxRepeatBound) {
      unsupported(kw, path, str("above ", kMaxRepeatBound, " is not supported, got ", it->dump()));
    }
    return int(it->get<int64_t>());
  }

  // ---- shared pieces, built once per grammar ----
  int32_t lazy(int32_t& r, const std::function<void(int32_t)>& make) {
    if (r < 0) {
      r = g_.new_rule();
      make(r);
    }
    return r;
  }
  int32_t ws() {
    return lazy(ws_, [&](int32_t r) {
      const int32_t rep = g_.repeat(g_.bytes(ByteSet().add(' ').add('\t').add('\n')), 0, kMaxWhitespace);
      g_.add_alt(r, {Grammar::ref(rep)});
    });
  }
  // One JSON string character: unescaped (any byte but controls, '"' and '\\', with multi-byte
  // UTF-8 sequences well formed so the text always decodes) or an escape.
  int32_t string_char() {
    return lazy(char_, [&](int32_t r) {
      const Sym cont = g_.bytes(ByteSet().add_range(0x80, 0xBF));
      g_.add_alt(r, {g_.bytes(ByteSet().add_range(0x20, 0x21).add_range(0x23, 0x5B).add_range(0x5D, 0x7F))});
      g_.add_alt(r, {g_.bytes(ByteSet().add_range(0xC2, 0xDF)), cont});
      g_.add_alt(r, {g_.byte(0xE0), g_.bytes(ByteSet().add_range(0xA0, 0xBF)), cont});
      g_.add_alt(r, {g_.bytes(ByteSet().add_range(0xE1, 0xEC).add_range(0xEE, 0xEF)), cont, cont});
      g_.add_alt(r, {g_.byte(0xED), g_.bytes(ByteSet().add_range(0x80, 0x9F)), cont});
      g_.add_alt(r, {g_.byte(0xF0), g_.bytes(ByteSet().add_range(0x90, 0xBF)), cont, cont});
      g_.add_alt(r, {g_.bytes(ByteSet().add_range(0xF1, 0xF3)), cont, cont, cont});
      g_.add_alt(r, {g_.byte(0xF4), g_.bytes(ByteSet().add_range(0x80, 0x8F)), cont, cont});
      const Sym hex = g_.bytes(ByteSet().add_range('0', '9').add_range('a', 'f').add_range('A', 'F'));
      ByteSet esc;
      for (char c : std::string("\"\\/bfnrt")) esc.add(uint8_t(c));
      g_.add_alt(r, {g_.byte('\\'), g_.bytes(esc)});
      g_.add_alt(r, {g_.byte('\\'), g_.byte('u'), hex, hex, hex, hex});
    });
  }
  int32_t string(int min, int max) {
    const Sym q = g_.byte('"');
    const int32_t body = g_.repeat(Grammar::ref(string_char()), min, max);
    const int32_t r = g_.new_rule();
    g_.add_alt(r, {q, Grammar::ref(body), q});
    return r;
  }
  int32_t number(bool integer) {
    int32_t& memo = integer ? int_ : num_;
    return lazy(memo, [&](int32_t r) {
      const Sym digit = g_.bytes(ByteSet().add_range('0', '9'));
      const int32_t sign = g_.new_rule();
      g_.add_alt(sign, {});
      g_.add_alt(sign, {g_.byte('-')});
      const int32_t more = g_.repeat(digit, 0, 15);  // up to kMaxInteger
      const int32_t whole = g_.new_rule();
      g_.add_alt(whole, {g_.byte('0')});
      g_.add_alt(whole, {g_.bytes(ByteSet().add_range('1', '9')), Grammar::ref(more)});
      if (integer) {
        g_.add_alt(r, {Grammar::ref(sign), Grammar::ref(whole)});
        return;
      }
      const int32_t frac = g_.new_rule();
      g_.add_alt(frac, {});
      g_.add_alt(frac, {g_.byte('.'), Grammar::ref(g_.repeat(digit, 1, 16))});
      const int32_t exp = g_.new_rule();
      g_.add_alt(exp, {});
      g_.add_alt(exp, {g_.bytes(ByteSet().add('e').add('E')), g_.bytes(ByteSet().add('+').add('-')),
                       Grammar::ref(g_.repeat(digit, 1, 3))});
      g_.add_alt(exp, {g_.bytes(ByteSet().add('e').add('E')), Grammar::ref(g_.repeat(digit, 1, 3))});
      g_.add_alt(r, {Grammar::ref(sign), Grammar::ref(whole), Grammar::ref(frac), Grammar::ref(exp)});
    });
  }
  int32_t literal_json(const json& v) { return g_.literal(v.dump()); }

  // Alternatives of `r`: prefix, then the decimal strings of equal length from x to y (x <= y),
  // as runs of digit classes (the usual split of a range into at most 2 per digit + 1 pieces).
  void same_length(int32_t r, std::vector<Sym> prefix, const std::string& x, const std::string& y) {
    if (x == y) {
      for (char c : x) prefix.push_back(g_.byte(uint8_t(c)));
      g_.add_alt(r, std::move(prefix));
      return;
    }
    if (x[0] == y[0]) {
      prefix.push_back(g_.byte(uint8_t(x[0])));
      same_length(r, std::move(prefix), x.substr(1), y.substr(1));
      return;
    }
    const size_t rest = x.size() - 1;
    char lo = x[0], hi = y[0];
    if (x.find_first_not_of('0', 1) != std::string::npos) {  // x's first digit covers only x.. upwards
      std::vector<Sym> p = prefix;
      p.push_back(g_.byte(uint8_t(lo++)));
      same_length(r, std::move(p), x.substr(1), std::string(rest, '9'));
    }
    if (y.find_first_not_of('9', 1) != std::string::npos) {  // y's first digit covers only ..y
      std::vector<Sym> p = prefix;
      p.push_back(g_.byte(uint8_t(hi--)));
      same_length(r, std::move(p), std::string(rest, '0'), y.substr(1));
    }
    if (lo <= hi) {
      prefix.push_back(g_.bytes(ByteSet().add_range(uint8_t(lo), uint8_t(hi))));
      for (size_t k = 0; k < rest; ++k) prefix.push_back(g_.bytes(ByteSet().add_range('0', '9')));
      g_.add_alt(r, std::move(prefix));
    }
  }
  // Alternatives of `r`: prefix, then the integers a..b (0 <= a <= b) without leading zeros.
  void range(int32_t r, const std::vector<Sym>& prefix, int64_t a, int64_t b) {
    const std::string sa = std::to_string(a), sb = std::to_string(b);
    int64_t first = 1;  // 10^(length - 1)
    for (size_t k = 1; k < sa.size(); ++k) first *= 10;
    for (size_t len = sa.size(); len <= sb.size(); ++len, first *= 10) {
      const int64_t lo = len == sa.size() ? a : first;
      const int64_t hi = len == sb.size() ? b : first * 10 - 1;
      same_length(r, prefix, std::to_string(lo), std::to_string(hi));
    }
  }
  // Integers in [lo, hi] (both within +-kMaxInteger).
  int32_t integer_range(int64_t lo, int64_t hi) {
    const int32_t r = g_.new_rule();
    if (hi >= 0) range(r, {}, std::max<int64_t>(lo, 0), hi);
    if (lo < 0) range(r, {g_.byte('-')}, hi < 0 ? -hi : 1, -lo);
    return r;
  }
  // The integer bounds that minimum / maximum / exclusive* set, clamped to +-kMaxInteger.
  std::pair<int64_t, int64_t> integer_bounds(const json& s, const std::string& path) {
    // long double holds every int64 exactly (x86's 64-bit mantissa), so 16-digit bounds given as
    // JSON integers stay exact, which double would round.
    using ld = long double;
    ld lo = -ld(kMaxInteger), hi = ld(kMaxInteger);
    for (const char* kw : kNumericBounds) {
      auto it = s.find(kw);
      if (it == s.end()) continue;
      if (!it->is_number()) invalid(kw, path, str("must be a number, got ", it->dump()));
      const ld v = it->is_number_unsigned()  ? ld(it->get<uint64_t>())
                   : it->is_number_integer() ? ld(it->get<int64_t>())
                                             : ld(it->get<double>());
      const std::string k = kw;
      if (k == "minimum") lo = std::max(lo, std::ceil(v));
      if (k == "exclusiveMinimum") lo = std::max(lo, std::floor(v) + 1);
      if (k == "maximum") hi = std::min(hi, std::floor(v));
      if (k == "exclusiveMaximum") hi = std::min(hi, std::ceil(v) - 1);
    }
    lo = std::clamp(lo, -ld(kMaxInteger), ld(kMaxInteger));
    hi = std::clamp(hi, -ld(kMaxInteger), ld(kMaxInteger));
    if (lo > hi) invalid("minimum", path, "and the other bounds leave no integer (within 16 digits)");
    return {int64_t(lo), int64_t(hi)};
  }

  // Any JSON value, object or array (for {} schemas and json_object).
  int32_t generic_value() {
    return lazy(value_, [&](int32_t r) {
      g_.add_alt(r, {Grammar::ref(generic_object())});
      g_.add_alt(r, {Grammar::ref(array(generic_value(), 0, -1))});
      g_.add_alt(r, {Grammar::ref(string(0, -1))});
      g_.add_alt(r, {Grammar::ref(number(false))});
      for (const char* lit : {"true", "false", "null"}) g_.add_alt(r, {Grammar::ref(g_.literal(lit))});
    });
  }
  int32_t generic_object() {
    return lazy(object_, [&](int32_t r) { g_.add_alt(r, {Grammar::ref(map(generic_value()))}); });
  }
  // An object of any keys whose values match rule `value`.
  int32_t map(int32_t value) {
    const int32_t member = g_.new_rule();
    g_.add_alt(member, {Grammar::ref(string(0, -1)), Grammar::ref(ws()), g_.byte(':'), Grammar::ref(ws()),
                        Grammar::ref(value), Grammar::ref(ws())});
    const int32_t sep = g_.new_rule();
    g_.add_alt(sep, {g_.byte(','), Grammar::ref(ws())});
    const Sym sep_sym = Grammar::ref(sep);
    const int32_t members = g_.repeat(Grammar::ref(member), 0, -1, &sep_sym);
    const int32_t r = g_.new_rule();
    g_.add_alt(r, {g_.byte('{'), Grammar::ref(ws()), Grammar::ref(members), g_.byte('}')});
    return r;
  }
  // "[" ws (item ws ("," ws item ws){min-1, max-1})? "]"
  int32_t array(int32_t item, int min, int max) {
    const int32_t elem = g_.new_rule();
    g_.add_alt(elem, {Grammar::ref(item), Grammar::ref(ws())});
    const int32_t sep = g_.new_rule();
    g_.add_alt(sep, {g_.byte(','), Grammar::ref(ws())});
    const Sym sep_sym = Grammar::ref(sep);
    const int32_t items = g_.repeat(Grammar::ref(elem), min, max, &sep_sym);
    const int32_t r = g_.new_rule();
    g_.add_alt(r, {g_.byte('['), Grammar::ref(ws()), Grammar::ref(items), g_.byte(']')});
    return r;
  }

  // ---- schemas ----
  int32_t compile(const json& s, const std::string& path, int depth) {
    if (depth > kMaxDepth)
      unsupported("schema", path, str("nests schemas deeper than ", kMaxDepth, " levels"));
    if (g_.n_symbols() > kMaxGrammarSymbols) {
      unsupported("schema", path,
                  str("is reached after the schema has compiled to more than ", kMaxGrammarSymbols,
                      " grammar symbols (large maxLength / maxItems bounds and enums add up); simplify it"));
    }
    if (s.is_boolean()) {
      if (!s.get<bool>()) invalid("false", path, "matches no value, so no output is possible");
      return generic_value();
    }
    if (!s.is_object()) invalid("schema", path, str("must be an object or a boolean, got ", s.type_name()));
    for (const auto& [kw, v] : s.items()) {
      if (kAnnotations.count(kw) == 0 && kSupported.count(kw) == 0) {
        unsupported(kw, path, "is not supported for constrained decoding (refused rather than ignored)");
      }
    }
    // Keywords combined with $ref, enum/const or anyOf/oneOf would intersect two constraints;
    // only annotations may sit next to them.
    auto alone = [&](const char* kw) {
      for (const auto& [other, v] : s.items()) {
        if (other == kw || kAnnotations.count(other) || other == "$defs" || other == "definitions") continue;
        if ((std::string(kw) == "enum" || std::string(kw) == "const") && other == "type") continue;
        unsupported(other, path, str("next to '", kw, "' is not supported"));
      }
    };
    if (s.contains("$ref")) {
      alone("$ref");
      return reference(s["$ref"], path, depth);
    }
    if (s.contains("enum") || s.contains("const")) {
      if (s.contains("enum") && s.contains("const"))
        unsupported("const", path, "next to 'enum' is not supported");
      const char* kw = s.contains("enum") ? "enum" : "const";
      alone(kw);
      return literals(s, kw, path);
    }
    for (const char* kw : {"anyOf", "oneOf"}) {
      if (!s.contains(kw)) continue;
      alone(kw);
      const json& list = s[kw];
      if (!list.is_array() || list.empty()) invalid(kw, path, "must be a non-empty array of schemas");
      const int32_t r = g_.new_rule();
      for (size_t i = 0; i < list.size(); ++i) {
        g_.add_alt(r, {Grammar::ref(compile(list[i], child(child(path, kw), std::to_string(i)), depth + 1))});
      }
      return r;
    }
    std::vector<std::string> types;
    if (auto it = s.find("type"); it != s.end()) {
      if (it->is_string()) {
        types.push_back(it->get<std::string>());
      } else if (it->is_array() && !it->empty()) {
        for (const json& t : *it) {
          if (!t.is_string()) invalid("type", path, "must be a type name or an array of them");
          types.push_back(t.get<std::string>());
        }
      } else {
        invalid("type", path, "must be a type name or a non-empty array of them");
      }
    } else if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties")) {
      types = {"object"};
    } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
      types = {"array"};
    } else if (s.contains("minLength") || s.contains("maxLength")) {
      types = {"string"};
    } else {
      return generic_value();
    }
    const int32_t r = g_.new_rule();
    for (const std::string& t : types) g_.add_alt(r, {Grammar::ref(typed(s, t, path, depth))});
    return r;
  }

  int32_t typed(const json& s, const std::string& t, const std::string& path, int depth) {
    if (t == "string") {
      const int min = bound(s, "minLength", path, 0), max = bound(s, "maxLength", path, -1);
      if (max >= 0 && max < min) invalid("maxLength", path, "is less than minLength");
      return string(min, max);
    }
    if (t == "integer" || t == "number") {
      const bool bounded = std::any_of(std::begin(kNumericBounds), std::end(kNumericBounds),
                                       [&](const char* kw) { return s.contains(kw); });
      if (!bounded) return number(t == "integer");
      if (t == "number") {
        for (const char* kw : kNumericBounds) {
          if (s.contains(kw)) unsupported(kw, path, "is supported on type integer only, not number");
        }
      }
      const auto [lo, hi] = integer_bounds(s, path);
      return integer_range(lo, hi);
    }
    if (t == "boolean") {
      const int32_t r = g_.new_rule();
      g_.add_alt(r, {Grammar::ref(g_.literal("true"))});
      g_.add_alt(r, {Grammar::ref(g_.literal("false"))});
      return r;
    }
    if (t == "null") return g_.literal("null");
    if (t == "array") {
      const int min = bound(s, "minItems", path, 0), max = bound(s, "maxItems", path, -1);
      if (max >= 0 && max < min) invalid("maxItems", path, "is less than minItems");
      auto it = s.find("items");
      if (it != s.end() && it->is_array())
        unsupported("items", path, "as an array (tuple form) is not supported");
      const int32_t item = it == s.end() ? generic_value() : compile(*it, child(path, "items"), depth + 1);
      return array(item, min, max);
    }
    if (t == "object") return object(s, path, depth);
    invalid("type", path, str("names unknown type \"", t, "\""));
  }

  int32_t object(const json& s, const std::string& path, int depth) {
    const json* props = s.contains("properties") ? &s["properties"] : nullptr;
    if (props && !props->is_object()) invalid("properties", path, "must be an object of schemas");
    std::vector<std::string> required;
    if (auto it = s.find("required"); it != s.end()) {
      if (!it->is_array()) invalid("required", path, "must be an array of property names");
      for (const json& k : *it) {
        if (!k.is_string()) invalid("required", path, "must be an array of property names");
        if (!props || !props->contains(k.get<std::string>())) {
          unsupported("required", path,
                      str("names \"", k.get<std::string>(), "\", which is not in 'properties'"));
        }
        required.push_back(k.get<std::string>());
      }
    }
    const json* extra = s.contains("additionalProperties") ? &s["additionalProperties"] : nullptr;
    if (extra && !(extra->is_boolean() || extra->is_object())) {
      invalid("additionalProperties", path, "must be a boolean or a schema");
    }
    const bool no_extra = extra && extra->is_boolean() && !extra->get<bool>();
    if (!props || props->empty()) {
      if (no_extra) return g_.literal("{}");
      const int32_t value = extra && extra->is_object()
                                ? compile(*extra, child(path, "additionalProperties"), depth + 1)
                                : generic_value();
      return map(value);
    }
    if (extra && !no_extra) {
      unsupported("additionalProperties", path,
                  "other than false is supported only for objects without 'properties' (generated objects "
                  "hold the listed properties)");
    }
    // Properties in schema order, optional ones skippable. Two rule chains: first[i] (no member
    // written yet, so no comma before the next) and rest[i] (a comma before the next member).
    std::vector<std::pair<std::string, const json*>> list;
    for (const auto& [k, v] : props->items()) list.emplace_back(k, &v);
    const size_t n = list.size();
    std::vector<int32_t> first(n + 1), rest(n + 1);
    first[n] = g_.new_rule();
    g_.add_alt(first[n], {});
    rest[n] = first[n];
    for (size_t i = n; i-- > 0;) {
      const auto& [key, sub] = list[i];
      const bool req = std::find(required.begin(), required.end(), key) != required.end();
      const int32_t value = compile(*sub, child(child(path, "properties"), key), depth + 1);
      const int32_t member = g_.new_rule();
      g_.add_alt(member, {Grammar::ref(literal_json(json(key))), Grammar::ref(ws()), g_.byte(':'),
                          Grammar::ref(ws()), Grammar::ref(value), Grammar::ref(ws())});
      first[i] = g_.new_rule();
      g_.add_alt(first[i], {Grammar::ref(member), Grammar::ref(rest[i + 1])});
      if (!req) g_.add_alt(first[i], {Grammar::ref(first[i + 1])});
      rest[i] = g_.new_rule();
      g_.add_alt(rest[i],
                 {g_.byte(','), Grammar::ref(ws()), Grammar::ref(member), Grammar::ref(rest[i + 1])});
      if (!req) g_.add_alt(rest[i], {Grammar::ref(rest[i + 1])});
    }
    const int32_t r = g_.new_rule();
    g_.add_alt(r, {g_.byte('{'), Grammar::ref(ws()), Grammar::ref(first[0]), g_.byte('}')});
    return r;
  }

  int32_t literals(const json& s, const char* kw, const std::string& path) {
    std::vector<json> values;
    if (std::string(kw) == "const") {
      values.push_back(s["const"]);
    } else {
      if (!s["enum"].is_array() || s["enum"].empty()) invalid("enum", path, "must be a non-empty array");
      values.assign(s["enum"].begin(), s["enum"].end());
    }
    // A "type" next to enum keeps only the values of that type (both keywords must hold).
    if (auto it = s.find("type"); it != s.end()) {
      std::vector<std::string> types;
      if (it->is_string()) types.push_back(it->get<std::string>());
      if (it->is_array()) {
        for (const json& t : *it) types.push_back(t.is_string() ? t.get<std::string>() : "");
      }
      auto fits = [&](const json& v) {
        for (const std::string& t : types) {
          if ((t == "string" && v.is_string()) || (t == "number" && v.is_number()) ||
              (t == "integer" &&
               (v.is_number_integer() ||
                (v.is_number_float() && v.get<double>() == double(int64_t(v.get<double>()))))) ||
              (t == "boolean" && v.is_boolean()) || (t == "null" && v.is_null()) ||
              (t == "object" && v.is_object()) || (t == "array" && v.is_array()))
            return true;
        }
        return false;
      };
      std::erase_if(values, [&](const json& v) { return !fits(v); });
      if (values.empty()) invalid(kw, path, "has no value of the schema's 'type'");
    }
    const int32_t r = g_.new_rule();
    for (const json& v : values) g_.add_alt(r, {Grammar::ref(literal_json(v))});
    return r;
  }

  int32_t reference(const json& ref, const std::string& path, int depth) {
    if (!ref.is_string()) invalid("$ref", path, "must be a string");
    const std::string target = ref.get<std::string>();
    if (target.empty() || target[0] != '#') {
      unsupported("$ref", path, str("\"", target, "\" is not a reference into this schema (\"#/...\")"));
    }
    if (auto it = refs_.find(target); it != refs_.end()) return it->second;
    const json* resolved = nullptr;
    try {
      resolved = &root_.at(json::json_pointer(target.substr(1)));
    } catch (const json::exception&) {
      invalid("$ref", path, str("\"", target, "\" does not resolve in this schema"));
    }
    // The rule exists before its body is compiled, so recursive schemas refer back to it.
    const int32_t r = g_.new_rule();
    refs_[target] = r;
    g_.add_alt(r, {Grammar::ref(compile(*resolved, target.substr(1), depth + 1))});
    return r;
  }

  const json& root_;
  Grammar& g_;
  std::map<std::string, int32_t> refs_;
  int32_t ws_ = -1, char_ = -1, int_ = -1, num_ = -1, value_ = -1, object_ = -1;
};

}  // namespace

std::shared_ptr<const Grammar> json_schema_grammar(const json& schema) {
  Grammar g;
  g.finish(add_json_schema(g, schema));
  return std::make_shared<const Grammar>(std::move(g));
}

std::shared_ptr<const Grammar> json_object_grammar() {
  Grammar g;
  g.finish(add_json_object(g));
  return std::make_shared<const Grammar>(std::move(g));
}

int32_t add_json_schema(Grammar& g, const json& schema) {
  return Compiler(schema, g).run(schema);
}

int32_t add_json_object(Grammar& g) {
  const json none;
  return Compiler(none, g).any_object();
}

}  // namespace qwen
