// Jinja value helpers with Python's semantics, since jinja2 evaluates templates as Python: truth,
// str() and repr() spellings, equality across int/float/bool, str.strip, and json.dumps.
#include <charconv>
#include <cmath>
#include <cstdio>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/unicode.h"
#include "util/check.h"

namespace qwen::jinja {

namespace {

// Python's float.__repr__: the shortest digits that round-trip, in fixed notation for decimal
// exponents -4..15 and as d.ddde±XX otherwise, always with a '.0' or an exponent.
std::string float_repr(double d, bool json) {
  if (std::isnan(d)) return json ? "NaN" : "nan";
  if (std::isinf(d)) return d > 0 ? (json ? "Infinity" : "inf") : (json ? "-Infinity" : "-inf");
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // "-1.2345e+05"
  const size_t epos = sci.find('e');
  const int exp = std::stoi(sci.substr(epos + 1));
  std::string mant = sci.substr(0, epos);
  std::string sign;
  if (mant[0] == '-') {
    sign = "-";
    mant.erase(0, 1);
  }
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(-exp - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
    return sign + out;
  }
  std::string out = digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char e[16];
  std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return sign + out + e;
}

void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void dump(std::string& out, const Value& v, int indent, bool sort_keys, int level) {
  auto newline = [&](int lvl) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent) * lvl, ' ');
  };
  const char* sep = indent >= 0 ? "," : ", ";
  switch (v.type()) {
    case Value::value_t::null:
      out += "null";
      return;
    case Value::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      return;
    case Value::value_t::number_integer:
      out += std::to_string(v.get<int64_t>());
      return;
    case Value::value_t::number_unsigned:
      out += std::to_string(v.get<uint64_t>());
      return;
    case Value::value_t::number_float:
      out += float_repr(v.get<double>(), true);
      return;
    case Value::value_t::string:
      dump_string(out, v.get_ref<const std::string&>());
      return;
    case Value::value_t::array:
      if (v.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += sep;
        newline(level + 1);
        dump(out, v[i], indent, sort_keys, level + 1);
      }
      newline(level);
      out += ']';
      return;
    case Value::value_t::object: {
      if (v.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<const std::string*, const Value*>> items;
      for (auto it = v.begin(); it != v.end(); ++it) items.emplace_back(&it.key(), &it.value());
      if (sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto& a, auto& b) { return *a.first < *b.first; });
      }
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += sep;
        newline(level + 1);
        dump_string(out, *items[i].first);
        out += ": ";
        dump(out, *items[i].second, indent, sort_keys, level + 1);
      }
      newline(level);
      out += '}';
      return;
    }
    default:
      throw Error("tojson: Undefined is not JSON serializable");
  }
}

std::string repr_string(const std::string& s) {
  const bool has_single = s.find('\'') != s.npos, has_double = s.find('"') != s.npos;
  const char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == q || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + q;
}

}  // namespace

std::string dumps(const Value& v, int indent, bool sort_keys) {
  std::string out;
  dump(out, v, indent, sort_keys, 0);
  return out;
}

bool truthy(const Value& v) {
  switch (v.type()) {
    case Value::value_t::null:
      return false;
    case Value::value_t::boolean:
      return v.get<bool>();
    case Value::value_t::number_integer:
    case Value::value_t::number_unsigned:
      return v.get<int64_t>() != 0;
    case Value::value_t::number_float:
      return v.get<double>() != 0.0;
    case Value::value_t::string:
      return !v.get_ref<const std::string&>().empty();  // json::empty() is false for strings
    case Value::value_t::array:
    case Value::value_t::object:
      return !v.empty();
    default:
      return false;  // Undefined
  }
}

std::string py_repr(const Value& v) {
  switch (v.type()) {
    case Value::value_t::null:
      return "None";
    case Value::value_t::boolean:
      return v.get<bool>() ? "True" : "False";
    case Value::value_t::number_float:
      return float_repr(v.get<double>(), false);
    case Value::value_t::string:
      return repr_string(v.get_ref<const std::string&>());
    case Value::value_t::array: {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + py_repr(v[i]);
      return out + "]";
    }
    case Value::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        out += (first ? "" : ", ") + repr_string(it.key()) + ": " + py_repr(it.value());
        first = false;
      }
      return out + "}";
    }
    case Value::value_t::discarded:
      return "Undefined";
    default:
      return v.dump();
  }
}

std::string to_str(const Value& v) {
  if (v.is_string()) return v.get<std::string>();
  if (is_undefined(v)) return "";
  return py_repr(v);
}

bool py_equal(const Value& a, const Value& b) {
  if (is_undefined(a) || is_undefined(b)) return is_undefined(a) && is_undefined(b);
  const bool an = a.is_number() || a.is_boolean(), bn = b.is_number() || b.is_boolean();
  if (an && bn) {
    auto num = [](const Value& v) { return v.is_boolean() ? (v.get<bool>() ? 1.0 : 0.0) : v.get<double>(); };
    if (a.is_number_float() || b.is_number_float()) return num(a) == num(b);
    auto inum = [](const Value& v) { return v.is_boolean() ? int64_t{v.get<bool>()} : v.get<int64_t>(); };
    return inum(a) == inum(b);
  }
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!py_equal(a[i], b[i])) return false;
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto jt = b.find(it.key());
      if (jt == b.end() || !py_equal(it.value(), *jt)) return false;
    }
    return true;
  }
  return a == b;
}

bool py_space(uint32_t cp) {
  return unicode::is_space(cp) || (cp >= 0x1C && cp <= 0x1F);
}

std::vector<std::string_view> code_points(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    unicode::next_cp(s, i);
    out.push_back(s.substr(at, i - at));
  }
  return out;
}

std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right) {
  const std::vector<std::string_view> cps = code_points(s);
  const std::vector<std::string_view> set = chars ? code_points(*chars) : std::vector<std::string_view>{};
  auto strip_it = [&](std::string_view cp) {
    if (!chars) {
      size_t i = 0;
      return py_space(unicode::next_cp(cp, i));
    }
    return std::find(set.begin(), set.end(), cp) != set.end();
  };
  size_t b = 0, e = cps.size();
  while (left && b < e && strip_it(cps[b])) ++b;
  while (right && e > b && strip_it(cps[e - 1])) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) out += cps[i];
  return out;
}

const char* type_name(const Value& v) {
  switch (v.type()) {
    case Value::value_t::null:
      return "none";
    case Value::value_t::boolean:
      return "bool";
    case Value::value_t::number_integer:
    case Value::value_t::number_unsigned:
      return "int";
    case Value::value_t::number_float:
      return "float";
    case Value::value_t::string:
      return "string";
    case Value::value_t::array:
      return "list";
    case Value::value_t::object:
      return "dict";
    default:
      return "undefined";
  }
}

}  // namespace qwen::jinja
