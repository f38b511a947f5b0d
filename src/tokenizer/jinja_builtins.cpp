// Jinja builtins: the filters, tests, str/dict methods and global functions chat templates use,
// with jinja2's (and Python's) behaviour. Unknown names are refused by the parser (filters,
// tests) or here (methods, functions) with the template line.
#include <algorithm>
#include <ctime>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/unicode.h"
#include "util/check.h"

namespace qwen::jinja {

namespace {

bool is_int(const Value& v) {
  return v.is_number_integer() || v.is_number_unsigned();
}

// Argument `i` / keyword `key` of a call, or `def` when absent; extra or unknown ones are errors.
class ArgReader {
 public:
  ArgReader(const Args& a, std::string what, std::vector<std::string> names)
      : a_(a), what_(std::move(what)), names_(std::move(names)) {
    if (a.pos.size() > names_.size()) {
      fail_line(a.line, str(what_, " takes at most ", names_.size(), " arguments, got ", a.pos.size()));
    }
    for (const auto& [k, v] : a.kw) {
      if (std::find(names_.begin(), names_.end(), k) == names_.end()) {
        fail_line(a.line, str(what_, " has no argument '", k, "'"));
      }
    }
  }
  Value get(size_t i, const Value& def = undefined()) const {
    if (i < a_.pos.size()) return a_.pos[i];
    for (const auto& [k, v] : a_.kw)
      if (k == names_[i]) return v;
    return def;
  }
  std::string str_arg(size_t i, const std::string& def = {}) const {
    const Value v = get(i, def);
    if (!v.is_string()) fail_line(a_.line, str(what_, ": argument '", names_[i], "' must be a string"));
    return v.get<std::string>();
  }

 private:
  const Args& a_;
  std::string what_;
  std::vector<std::string> names_;
};

std::string ascii_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
std::string ascii_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
// Python's str.upper/lower change non-ASCII letters too; templates apply them to ASCII role and
// type names, and a non-ASCII letter is refused rather than left unchanged.
std::string case_map(const std::string& s, bool upper, int line) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80)
      fail_line(line, "upper/lower of non-ASCII text is not supported");
  }
  return upper ? ascii_upper(s) : ascii_lower(s);
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  size_t pos = 0;
  int64_t done = 0;
  if (from.empty()) {  // Python inserts `to` between every character and at both ends
    for (std::string_view cp : code_points(s)) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out += cp;
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  for (size_t at; (count < 0 || done < count) && (at = s.find(from, pos)) != std::string::npos; ++done) {
    out.append(s, pos, at - pos);
    out += to;
    pos = at + from.size();
  }
  return out + s.substr(pos);
}

Value split(const std::string& s, const Value& sep, int64_t maxsplit, int line) {
  Value out = Value::array();
  if (sep.is_null() || is_undefined(sep)) {  // runs of whitespace, no empty strings
    const auto cps = code_points(s);
    auto space = [&](size_t i) {
      size_t k = 0;
      return py_space(unicode::next_cp(cps[i], k));
    };
    size_t i = 0;
    while (i < cps.size()) {
      while (i < cps.size() && space(i)) ++i;
      if (i == cps.size()) break;
      std::string word;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        for (; i < cps.size(); ++i) word += cps[i];
        out.push_back(py_strip(word, nullptr, false, true));
        break;
      }
      while (i < cps.size() && !space(i)) word += cps[i++];
      out.push_back(word);
    }
    return out;
  }
  if (!sep.is_string() || sep.get_ref<const std::string&>().empty())
    fail_line(line, "split: empty or non-string separator");
  const std::string& d = sep.get_ref<const std::string&>();
  size_t pos = 0;
  for (size_t at; (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) &&
                  (at = s.find(d, pos)) != std::string::npos;) {
    out.push_back(s.substr(pos, at - pos));
    pos = at + d.size();
  }
  out.push_back(s.substr(pos));
  return out;
}

bool affix(const std::string& s, const Value& what, bool prefix, int line) {
  auto one = [&](const Value& p) {
    if (!p.is_string()) fail_line(line, "startswith/endswith takes a string or a tuple of strings");
    const std::string& x = p.get_ref<const std::string&>();
    return prefix ? s.starts_with(x) : s.ends_with(x);
  };
  if (what.is_array()) return std::any_of(what.begin(), what.end(), one);
  return one(what);
}

int64_t length(const Value& v, int line) {
  if (v.is_string()) return static_cast<int64_t>(code_points(v.get_ref<const std::string&>()).size());
  if (v.is_array() || v.is_object()) return static_cast<int64_t>(v.size());
  if (is_undefined(v)) return 0;
  fail_line(line, str("object of type '", type_name(v), "' has no length"));
}

std::vector<Value> items_of(const Value& v, int line) {
  std::vector<Value> out;
  if (v.is_array()) {
    out.assign(v.begin(), v.end());
  } else if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) out.emplace_back(it.key());
  } else if (v.is_string()) {
    for (std::string_view cp : code_points(v.get_ref<const std::string&>()))
      out.emplace_back(std::string(cp));
  } else if (!is_undefined(v)) {
    fail_line(line, str("'", type_name(v), "' object is not iterable"));
  }
  return out;
}

// item.attr for map/selectattr, with dotted paths ("function.name") as jinja2 allows.
Value attribute(const Value& item, const std::string& path) {
  Value cur = item;
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t dot = std::min(path.find('.', pos), path.size());
    const std::string key = path.substr(pos, dot - pos);
    if (cur.is_object() && cur.contains(key)) {
      cur = cur[key];
    } else if (cur.is_array() && !key.empty() && std::all_of(key.begin(), key.end(), ::isdigit) &&
               std::stoul(key) < cur.size()) {
      cur = cur[std::stoul(key)];
    } else {
      return undefined();
    }
    pos = dot + 1;
  }
  return cur;
}

Value items_filter(const Value& v, int line) {
  Value out = Value::array();
  if (is_undefined(v)) return out;
  if (!v.is_object()) fail_line(line, str("items: expected a mapping, got ", type_name(v)));
  for (auto it = v.begin(); it != v.end(); ++it) out.push_back(Value::array({it.key(), it.value()}));
  return out;
}

// select/reject/selectattr/rejectattr: keep items where the test (or truth) equals `keep`.
Value select(const Value& v, const Args& a, bool by_attr, bool keep) {
  if (a.pos.empty() && by_attr) fail_line(a.line, "selectattr/rejectattr need an attribute name");
  if (!a.kw.empty()) fail_line(a.line, "select filters take no keyword arguments");
  const size_t test_at = by_attr ? 1 : 0;
  Args test_args;
  test_args.line = a.line;
  for (size_t i = test_at + 1; i < a.pos.size(); ++i) test_args.pos.push_back(a.pos[i]);
  Value out = Value::array();
  for (const Value& item : items_of(v, a.line)) {
    Value subject = item;
    if (by_attr) {
      if (!a.pos[0].is_string()) fail_line(a.line, "attribute name must be a string");
      subject = attribute(item, a.pos[0].get<std::string>());
    }
    bool ok;
    if (a.pos.size() > test_at) {
      if (!a.pos[test_at].is_string()) fail_line(a.line, "test name must be a string");
      ok = call_test(a.pos[test_at].get<std::string>(), subject, test_args);
    } else {
      ok = truthy(subject);
    }
    if (ok == keep) out.push_back(item);
  }
  return out;
}

Value to_int(const Value& v, const Value& def) {
  if (v.is_boolean()) return int64_t{v.get<bool>()};
  if (is_int(v)) return v;
  if (v.is_number_float()) return static_cast<int64_t>(v.get<double>());
  if (v.is_string()) {
    const std::string s = py_strip(v.get<std::string>(), nullptr, true, true);
    try {
      size_t used = 0;
      const long long x = std::stoll(s, &used);
      if (used == s.size()) return int64_t{x};
      const double d = std::stod(s, &used);
      if (used == s.size()) return static_cast<int64_t>(d);
    } catch (const std::exception&) {
    }
  }
  return def;
}

}  // namespace

bool known_filter(const std::string& n) {
  static const char* names[] = {
      "length", "count", "tojson", "trim",  "upper",  "lower",   "capitalize", "default",    "d",
      "first",  "last",  "join",   "map",   "select", "reject",  "selectattr", "rejectattr", "list",
      "string", "int",   "float",  "items", "safe",   "replace", "reverse",    "abs"};
  return std::find(std::begin(names), std::end(names), n) != std::end(names);
}

bool known_test(const std::string& n) {
  static const char* names[] = {
      "defined", "undefined", "none",     "boolean",  "true", "false", "integer",     "float", "number",
      "string",  "mapping",   "iterable", "sequence", "even", "odd",   "divisibleby", "eq",    "equalto",
      "ne",      "lt",        "le",       "gt",       "ge",   "in",    "sameas",      "lower", "upper"};
  return std::find(std::begin(names), std::end(names), n) != std::end(names);
}

Value call_filter(const std::string& name, const Value& v, const Args& a) {
  const int line = a.line;
  if (name == "length" || name == "count") return length(v, line);
  if (name == "tojson") {
    // transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys).
    ArgReader r(a, "tojson", {"indent", "sort_keys"});
    const Value indent = r.get(0, nullptr);
    if (!indent.is_null() && !is_int(indent)) fail_line(line, "tojson: indent must be an integer");
    if (is_undefined(v)) fail_line(line, "tojson: the value is undefined");
    return dumps(v, indent.is_null() ? -1 : indent.get<int>(), truthy(r.get(1, false)));
  }
  if (name == "trim") {
    ArgReader r(a, "trim", {"chars"});
    const Value chars = r.get(0, nullptr);
    if (chars.is_null()) return py_strip(to_str(v), nullptr, true, true);
    const std::string c = r.str_arg(0);
    return py_strip(to_str(v), &c, true, true);
  }
  if (name == "upper" || name == "lower") {
    ArgReader r(a, name, {});
    return case_map(to_str(v), name == "upper", line);
  }
  if (name == "capitalize") {
    ArgReader r(a, name, {});
    std::string s = case_map(to_str(v), false, line);
    if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    return s;
  }
  if (name == "default" || name == "d") {
    ArgReader r(a, name, {"default_value", "boolean"});
    const bool boolean = truthy(r.get(1, false));
    return is_undefined(v) || (boolean && !truthy(v)) ? r.get(0, "") : v;
  }
  if (name == "first" || name == "last") {
    ArgReader r(a, name, {});
    const std::vector<Value> items = items_of(v, line);
    if (items.empty()) return undefined();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    ArgReader r(a, "join", {"d", "attribute"});
    const std::string sep = r.str_arg(0, "");
    const Value attr = r.get(1, nullptr);
    std::string out;
    bool first = true;
    for (const Value& x : items_of(v, line)) {
      if (!first) out += sep;
      first = false;
      out += to_str(attr.is_string() ? attribute(x, attr.get<std::string>()) : x);
    }
    return out;
  }
  if (name == "map") {
    Value out = Value::array();
    if (a.pos.empty()) {
      ArgReader r(a, "map", {"attribute", "default"});
      const Value attr = r.get(0);
      if (!attr.is_string()) fail_line(line, "map needs attribute='name' or a filter name");
      for (const Value& x : items_of(v, line)) {
        Value y = attribute(x, attr.get<std::string>());
        out.push_back(is_undefined(y) ? r.get(1) : y);
      }
      return out;
    }
    if (!a.pos[0].is_string() || !known_filter(a.pos[0].get<std::string>())) {
      fail_line(line, str("map: unsupported filter ", py_repr(a.pos[0])));
    }
    Args rest{{a.pos.begin() + 1, a.pos.end()}, a.kw, line};
    for (const Value& x : items_of(v, line)) out.push_back(call_filter(a.pos[0].get<std::string>(), x, rest));
    return out;
  }
  if (name == "select" || name == "reject") return select(v, a, false, name == "select");
  if (name == "selectattr" || name == "rejectattr") return select(v, a, true, name == "selectattr");
  if (name == "list") {
    ArgReader r(a, name, {});
    Value out = Value::array();
    for (Value& x : items_of(v, line)) out.push_back(std::move(x));
    return out;
  }
  if (name == "string") {
    ArgReader r(a, name, {});
    return to_str(v);
  }
  if (name == "int") {
    ArgReader r(a, "int", {"default", "base"});
    if (!r.get(1).is_discarded()) fail_line(line, "int: base is not supported");
    return to_int(v, r.get(0, 0));
  }
  if (name == "float") {
    ArgReader r(a, "float", {"default"});
    if (v.is_number() || v.is_boolean()) return v.is_boolean() ? double(v.get<bool>()) : v.get<double>();
    if (v.is_string()) {
      try {
        size_t used = 0;
        const std::string s = py_strip(v.get<std::string>(), nullptr, true, true);
        const double d = std::stod(s, &used);
        if (used == s.size()) return d;
      } catch (const std::exception&) {
      }
    }
    return r.get(0, 0.0);
  }
  if (name == "items") {
    ArgReader r(a, name, {});
    return items_filter(v, line);
  }
  if (name == "safe") {
    ArgReader r(a, name, {});
    return v;
  }
  if (name == "replace") {
    ArgReader r(a, "replace", {"old", "new", "count"});
    const Value count = r.get(2, nullptr);
    if (!count.is_null() && !is_int(count)) fail_line(line, "replace: count must be an integer");
    return replace_all(to_str(v), r.str_arg(0), r.str_arg(1), count.is_null() ? -1 : count.get<int64_t>());
  }
  if (name == "reverse") {
    ArgReader r(a, name, {});
    std::vector<Value> items = items_of(v, line);
    std::reverse(items.begin(), items.end());
    if (v.is_string()) {
      std::string s;
      for (const Value& x : items) s += x.get<std::string>();
      return s;
    }
    return Value(items);
  }
  if (name == "abs") {
    ArgReader r(a, name, {});
    if (is_int(v)) return std::abs(v.get<int64_t>());
    if (v.is_number_float()) return std::abs(v.get<double>());
    fail_line(line, str("abs: bad operand type '", type_name(v), "'"));
  }
  fail_line(line, str("unsupported filter '", name, "'"));
}

bool call_test(const std::string& name, const Value& v, const Args& a) {
  const int line = a.line;
  auto arg = [&]() -> const Value& {
    if (a.pos.size() != 1 || !a.kw.empty()) fail_line(line, str("test '", name, "' takes one argument"));
    return a.pos[0];
  };
  if (name != "divisibleby" && name != "eq" && name != "equalto" && name != "ne" && name != "lt" &&
      name != "le" && name != "gt" && name != "ge" && name != "in" && name != "sameas" &&
      (!a.pos.empty() || !a.kw.empty())) {
    fail_line(line, str("test '", name, "' takes no arguments"));
  }
  if (name == "defined") return !is_undefined(v);
  if (name == "undefined") return is_undefined(v);
  if (name == "none") return v.is_null();
  if (name == "boolean") return v.is_boolean();
  if (name == "true") return v.is_boolean() && v.get<bool>();
  if (name == "false") return v.is_boolean() && !v.get<bool>();
  if (name == "integer") return is_int(v);
  if (name == "float") return v.is_number_float();
  if (name == "number") return v.is_number() || v.is_boolean();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") return v.is_string() || v.is_array() || v.is_object() || is_undefined(v);
  if (name == "sequence") return v.is_string() || v.is_array() || v.is_object();
  if (name == "even" || name == "odd") {
    if (!is_int(v)) fail_line(line, str("test '", name, "' needs an integer"));
    return (v.get<int64_t>() % 2 == 0) == (name == "even");
  }
  if (name == "divisibleby") {
    const Value& d = arg();
    if (!is_int(v) || !is_int(d) || d.get<int64_t>() == 0)
      fail_line(line, "divisibleby needs non-zero integers");
    return v.get<int64_t>() % d.get<int64_t>() == 0;
  }
  if (name == "eq" || name == "equalto") return py_equal(v, arg());
  if (name == "ne") return !py_equal(v, arg());
  if (name == "sameas") return v.type() == arg().type() && py_equal(v, arg());
  if (name == "lt" || name == "le" || name == "gt" || name == "ge") {
    const Value& b = arg();
    const bool nums = (v.is_number() && b.is_number()), strs = v.is_string() && b.is_string();
    if (!nums && !strs)
      fail_line(line, str("test '", name, "': cannot compare ", type_name(v), " and ", type_name(b)));
    const bool lt = nums ? v.get<double>() < b.get<double>() : v.get<std::string>() < b.get<std::string>();
    const bool gt = nums ? v.get<double>() > b.get<double>() : v.get<std::string>() > b.get<std::string>();
    return name == "lt" ? lt : name == "le" ? !gt : name == "gt" ? gt : !lt;
  }
  if (name == "in") {
    const Value& hay = arg();
    if (hay.is_string())
      return v.is_string() && hay.get<std::string>().find(v.get<std::string>()) != std::string::npos;
    if (hay.is_object()) return v.is_string() && hay.contains(v.get<std::string>());
    if (hay.is_array())
      return std::any_of(hay.begin(), hay.end(), [&](const Value& x) { return py_equal(x, v); });
    fail_line(line, str("test 'in' needs a container, got ", type_name(hay)));
  }
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    const std::string& s = v.get_ref<const std::string&>();
    bool cased = false;
    for (const char c : s) {
      if (std::isalpha(static_cast<unsigned char>(c))) cased = true;
      if (name == "lower" ? std::isupper(static_cast<unsigned char>(c))
                          : std::islower(static_cast<unsigned char>(c))) {
        return false;
      }
    }
    return cased;
  }
  fail_line(line, str("unsupported test '", name, "'"));
}

Value call_method(const Value& obj, const std::string& name, const Args& a) {
  const int line = a.line;
  if (obj.is_string()) {
    const std::string& s = obj.get_ref<const std::string&>();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      ArgReader r(a, name, {"chars"});
      const Value chars = r.get(0, nullptr);
      const std::string c = chars.is_null() ? std::string() : r.str_arg(0);
      return py_strip(s, chars.is_null() ? nullptr : &c, name != "rstrip", name != "lstrip");
    }
    if (name == "split") {
      ArgReader r(a, name, {"sep", "maxsplit"});
      const Value maxsplit = r.get(1, -1);
      if (!is_int(maxsplit)) fail_line(line, "split: maxsplit must be an integer");
      return split(s, r.get(0, nullptr), maxsplit.get<int64_t>(), line);
    }
    if (name == "startswith" || name == "endswith") {
      ArgReader r(a, name, {"prefix"});
      return affix(s, r.get(0, nullptr), name == "startswith", line);
    }
    if (name == "upper" || name == "lower") {
      ArgReader r(a, name, {});
      return case_map(s, name == "upper", line);
    }
    if (name == "replace") {
      ArgReader r(a, name, {"old", "new", "count"});
      const Value count = r.get(2, -1);
      if (!is_int(count)) fail_line(line, "replace: count must be an integer");
      return replace_all(s, r.str_arg(0), r.str_arg(1), count.get<int64_t>());
    }
    if (name == "find") {
      ArgReader r(a, name, {"sub"});
      const size_t at = s.find(r.str_arg(0));
      return at == std::string::npos ? int64_t{-1}
                                     : static_cast<int64_t>(code_points(s.substr(0, at)).size());
    }
    if (name == "join") {
      ArgReader r(a, name, {"iterable"});
      std::string out;
      bool first = true;
      for (const Value& x : items_of(r.get(0), line)) {
        if (!x.is_string()) fail_line(line, "str.join: items must be strings");
        out += (first ? "" : s) + x.get<std::string>();
        first = false;
      }
      return out;
    }
  }
  if (obj.is_object()) {
    if (name == "items") {
      ArgReader r(a, name, {});
      return items_filter(obj, line);
    }
    if (name == "keys" || name == "values") {
      ArgReader r(a, name, {});
      Value out = Value::array();
      for (auto it = obj.begin(); it != obj.end(); ++it)
        out.push_back(name == "keys" ? Value(it.key()) : it.value());
      return out;
    }
    if (name == "get") {
      ArgReader r(a, name, {"key", "default"});
      const Value key = r.get(0);
      if (key.is_string() && obj.contains(key.get<std::string>())) return obj[key.get<std::string>()];
      return r.get(1, nullptr);
    }
  }
  fail_line(line, str("unsupported method '", name, "' on a ", type_name(obj)));
}

bool is_global_function(const std::string& name) {
  return name == "raise_exception" || name == "namespace" || name == "dict" || name == "range" ||
         name == "strftime_now";
}

Value call_global(const std::string& name, const Args& a, bool& found) {
  found = true;
  const int line = a.line;
  if (name == "raise_exception") {
    ArgReader r(a, name, {"message"});
    throw Error(str("chat template error: ", to_str(r.get(0, ""))));
  }
  if (name == "namespace" || name == "dict") {
    if (!a.pos.empty()) fail_line(line, str(name, "() takes keyword arguments only"));
    Value out = Value::object();
    for (const auto& [k, v] : a.kw) out[k] = v;
    return out;
  }
  if (name == "range") {
    if (!a.kw.empty() || a.pos.empty() || a.pos.size() > 3) fail_line(line, "range takes 1 to 3 integers");
    for (const Value& x : a.pos)
      if (!is_int(x)) fail_line(line, "range takes integers");
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) {
      stop = a.pos[0].get<int64_t>();
    } else {
      start = a.pos[0].get<int64_t>();
      stop = a.pos[1].get<int64_t>();
      if (a.pos.size() == 3) step = a.pos[2].get<int64_t>();
    }
    if (step == 0) fail_line(line, "range step must not be zero");
    Value out = Value::array();
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() >= 1000000) fail_line(line, "range is too long");
      out.push_back(i);
    }
    return out;
  }
  if (name == "strftime_now") {
    // transformers: datetime.now().strftime(format), local time.
    ArgReader r(a, name, {"format"});
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof buf, r.str_arg(0).c_str(), &local);
    return std::string(buf, n);
  }
  found = false;
  return undefined();
}

}  // namespace qwen::jinja
