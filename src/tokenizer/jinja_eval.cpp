// Jinja evaluator: walks the tree of jinja_ast.h over JSON values with Python's semantics
// (truth, `and`/`or` returning an operand, int/float arithmetic, floor division and modulo).
// Scoping as in jinja2: a for loop's body has its own scope (what it sets stays inside, except
// namespace attributes), `if` does not; macros see the variables around their call.
#include <cmath>
#include <map>
#include <optional>

#include "tokenizer/jinja_ast.h"
#include "util/check.h"

namespace qwen::jinja {

namespace {

enum class Flow { kNormal, kBreak, kContinue };

bool is_num(const Value& v) {
  return v.is_number() || v.is_boolean();
}
bool is_int(const Value& v) {
  return v.is_number_integer() || v.is_number_unsigned() || v.is_boolean();
}
int64_t as_int(const Value& v) {
  return v.is_boolean() ? int64_t{v.get<bool>()} : v.get<int64_t>();
}
double as_double(const Value& v) {
  return v.is_boolean() ? double(v.get<bool>()) : v.get<double>();
}

Value arith(const std::string& op, const Value& a, const Value& b, int line) {
  auto bad = [&]() -> Value {
    fail_line(line,
              str("unsupported operand types for ", op, ": '", type_name(a), "' and '", type_name(b), "'"));
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) return a.get<std::string>() + b.get<std::string>();
    if (a.is_array() && b.is_array()) {
      Value r = a;
      for (const Value& x : b) r.push_back(x);
      return r;
    }
  }
  if (op == "*" && ((a.is_string() || a.is_array()) && is_int(b))) {
    Value r = a.is_string() ? Value("") : Value::array();
    for (int64_t k = 0; k < as_int(b); ++k) r = arith("+", r, a, line);
    return r;
  }
  if (!is_num(a) || !is_num(b)) return bad();
  const bool ints = is_int(a) && is_int(b);
  if (op == "/") {
    if (as_double(b) == 0) fail_line(line, "division by zero");
    return as_double(a) / as_double(b);
  }
  if (op == "//" || op == "%") {
    if (as_double(b) == 0) fail_line(line, "division by zero");
    if (ints) {
      const int64_t x = as_int(a), y = as_int(b);
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {  // Python floors; C++ truncates
        --q;
        r += y;
      }
      return op == "//" ? q : r;
    }
    const double x = as_double(a), y = as_double(b);
    const double q = std::floor(x / y);
    return op == "//" ? q : x - q * y;
  }
  if (op == "**") {
    if (ints && as_int(b) >= 0) {
      int64_t r = 1;
      for (int64_t k = 0; k < as_int(b); ++k) r *= as_int(a);
      return r;
    }
    return std::pow(as_double(a), as_double(b));
  }
  if (ints) {
    const int64_t x = as_int(a), y = as_int(b);
    if (op == "+") return x + y;
    if (op == "-") return x - y;
    if (op == "*") return x * y;
  } else {
    const double x = as_double(a), y = as_double(b);
    if (op == "+") return x + y;
    if (op == "-") return x - y;
    if (op == "*") return x * y;
  }
  return bad();
}

bool less(const Value& a, const Value& b, int line) {
  if (is_num(a) && is_num(b)) {
    if (is_int(a) && is_int(b)) return as_int(a) < as_int(b);
    return as_double(a) < as_double(b);
  }
  if (a.is_string() && b.is_string())
    return a.get_ref<const std::string&>() < b.get_ref<const std::string&>();
  fail_line(line, str("'<' not supported between '", type_name(a), "' and '", type_name(b), "'"));
}

bool contains(const Value& needle, const Value& hay, int line) {
  if (hay.is_string()) {
    if (!needle.is_string()) fail_line(line, str("'in <string>' requires a string, not ", type_name(needle)));
    return hay.get_ref<const std::string&>().find(needle.get_ref<const std::string&>()) != std::string::npos;
  }
  if (hay.is_array()) {
    for (const Value& x : hay)
      if (py_equal(x, needle)) return true;
    return false;
  }
  if (hay.is_object()) return needle.is_string() && hay.contains(needle.get_ref<const std::string&>());
  if (is_undefined(hay)) return false;
  fail_line(line, str("argument of type '", type_name(hay), "' is not iterable"));
}

// Python slice indices for a sequence of n items.
std::vector<size_t> slice_indices(int64_t n, const Value& start, const Value& stop, const Value& step,
                                  int line) {
  auto opt = [&](const Value& v) -> std::optional<int64_t> {
    if (v.is_null() || is_undefined(v)) return std::nullopt;
    if (!is_int(v)) fail_line(line, "slice indices must be integers");
    return as_int(v);
  };
  const int64_t st = opt(step).value_or(1);
  if (st == 0) fail_line(line, "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> v, int64_t def) {
    if (!v) return def;
    int64_t x = *v < 0 ? *v + n : *v;
    if (st > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t b = clamp(opt(start), st > 0 ? 0 : n - 1), e = clamp(opt(stop), st > 0 ? n : -1);
  std::vector<size_t> out;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(static_cast<size_t>(i));
  return out;
}

class Evaluator {
 public:
  explicit Evaluator(const Value& context) {
    scopes_.emplace_back();
    for (auto it = context.begin(); it != context.end(); ++it) scopes_.back()[it.key()] = it.value();
  }

  Flow exec(const Body& body, std::string& out) {
    for (const auto& s : body) {
      const Flow f = exec(*s, out);
      if (f != Flow::kNormal) return f;
    }
    return Flow::kNormal;
  }

 private:
  Flow exec(const Stmt& s, std::string& out) {
    switch (s.kind) {
      case Stmt::kText:
        out += s.text;
        return Flow::kNormal;
      case Stmt::kOutput:
        out += to_str(eval(*s.expr));
        return Flow::kNormal;
      case Stmt::kIf:
        for (const auto& [cond, body] : s.branches)
          if (truthy(eval(*cond))) return exec(body, out);
        return exec(s.else_body, out);
      case Stmt::kFor:
        return exec_for(s, out);
      case Stmt::kSet: {
        Value v = eval(*s.expr);
        if (!s.attr.empty()) {
          Value* ns = find(s.targets[0]);
          if (!ns || !ns->is_object())
            fail_line(s.line,
                      str("cannot set attribute '", s.attr, "' of '", s.targets[0], "' (not a namespace)"));
          (*ns)[s.attr] = std::move(v);
        } else {
          bind(s.targets, std::move(v), s.line);
        }
        return Flow::kNormal;
      }
      case Stmt::kSetBlock: {
        std::string captured;
        exec(s.body, captured);
        scopes_.back()[s.targets[0]] = captured;
        return Flow::kNormal;
      }
      case Stmt::kMacro:
        macros_[s.attr] = &s;
        return Flow::kNormal;
      case Stmt::kBreak:
        return Flow::kBreak;
      case Stmt::kContinue:
        return Flow::kContinue;
      case Stmt::kBlock:
        return exec(s.body, out);
    }
    fail_line(s.line, "unhandled statement");
  }

  void bind(const std::vector<std::string>& targets, Value v, int line) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = std::move(v);
      return;
    }
    if (!v.is_array() || v.size() != targets.size()) {
      fail_line(line, str("cannot unpack ", type_name(v), " into ", targets.size(), " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) scopes_.back()[targets[i]] = v[i];
  }

  static std::vector<Value> iterate(const Value& v, int line) {
    std::vector<Value> items;
    if (v.is_array()) {
      items.assign(v.begin(), v.end());
    } else if (v.is_object()) {
      for (auto it = v.begin(); it != v.end(); ++it) items.emplace_back(it.key());
    } else if (v.is_string()) {
      for (std::string_view cp : code_points(v.get_ref<const std::string&>()))
        items.emplace_back(std::string(cp));
    } else if (!is_undefined(v)) {
      fail_line(line, str("'", type_name(v), "' object is not iterable"));
    }
    return items;
  }

  Flow exec_for(const Stmt& s, std::string& out) {
    std::vector<Value> items = iterate(eval(*s.expr), s.line);
    scopes_.emplace_back();
    if (s.filter) {  // `for x in xs if cond`: loop.index counts the kept items only
      std::vector<Value> kept;
      for (Value& x : items) {
        bind(s.targets, x, s.line);
        if (truthy(eval(*s.filter))) kept.push_back(std::move(x));
      }
      items = std::move(kept);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      bind(s.targets, items[i], s.line);
      Value loop = {{"index0", i},     {"index", i + 1},     {"revindex", n - i}, {"revindex0", n - i - 1},
                    {"first", i == 0}, {"last", i == n - 1}, {"length", n},       {"depth", 1},
                    {"depth0", 0}};
      loop["previtem"] = i > 0 ? items[i - 1] : undefined();
      loop["nextitem"] = i + 1 < n ? items[i + 1] : undefined();
      scopes_.back()["loop"] = std::move(loop);
      if (exec(s.body, out) == Flow::kBreak) break;
    }
    scopes_.pop_back();
    if (n == 0) return exec(s.else_body, out);
    return Flow::kNormal;
  }

  Value* find(const std::string& name) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return &f->second;
    }
    return nullptr;
  }

  Args eval_args(const Expr& e, size_t first) {
    Args a;
    a.line = e.line;
    for (size_t i = first; i < e.kids.size(); ++i) a.pos.push_back(eval(*e.kids[i]));
    for (const auto& [k, v] : e.kwargs) a.kw.emplace_back(k, eval(*v));
    return a;
  }

  Value call_macro(const Stmt& m, const Args& a) {
    if (a.pos.size() > m.params.size()) {
      fail_line(a.line,
                str("macro '", m.attr, "' takes ", m.params.size(), " arguments, got ", a.pos.size()));
    }
    std::map<std::string, Value> frame;
    for (size_t i = 0; i < m.params.size(); ++i) {
      const auto& [name, def] = m.params[i];
      if (i < a.pos.size()) {
        frame[name] = a.pos[i];
      } else {
        frame[name] = def ? eval(*def) : undefined();
      }
    }
    for (const auto& [k, v] : a.kw) {
      bool known = false;
      for (const auto& p : m.params) known |= p.first == k;
      if (!known) fail_line(a.line, str("macro '", m.attr, "' has no parameter '", k, "'"));
      frame[k] = v;
    }
    scopes_.push_back(std::move(frame));
    std::string out;
    exec(m.body, out);
    scopes_.pop_back();
    return out;
  }

  Value eval_call(const Expr& e) {
    const Expr& callee = *e.kids[0];
    if (callee.kind == Expr::kAttr) {
      const Value obj = eval(*callee.kids[0]);
      return call_method(obj, callee.name, eval_args(e, 1));
    }
    if (callee.kind == Expr::kName) {
      const Args a = eval_args(e, 1);
      if (auto m = macros_.find(callee.name); m != macros_.end() && !find(callee.name)) {
        return call_macro(*m->second, a);
      }
      bool found = false;
      Value r = call_global(callee.name, a, found);
      if (found) return r;
      fail_line(e.line, str("'", callee.name, "' is not a function this engine knows"));
    }
    fail_line(e.line, "unsupported call expression");
  }

  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::kLiteral:
        return e.literal;
      case Expr::kName: {
        if (const Value* v = find(e.name)) return *v;
        // A function name is defined (`strftime_now is defined`); calls go through eval_call.
        bool found = macros_.count(e.name) > 0;
        if (!found) found = is_global_function(e.name);
        return found ? Value("<function " + e.name + ">") : undefined();
      }
      case Expr::kList: {
        Value r = Value::array();
        for (const auto& k : e.kids) r.push_back(eval(*k));
        return r;
      }
      case Expr::kDict: {
        Value r = Value::object();
        for (size_t i = 0; i < e.kids.size(); i += 2) {
          const Value k = eval(*e.kids[i]);
          if (!k.is_string()) fail_line(e.line, "dict keys must be strings");
          r[k.get<std::string>()] = eval(*e.kids[i + 1]);
        }
        return r;
      }
      case Expr::kAttr: {
        Value held;
        const Value& obj = operand(*e.kids[0], held);
        if (is_undefined(obj))
          fail_line(e.line, str("cannot read attribute '", e.name, "' of an undefined value"));
        if (obj.is_object()) {
          auto it = obj.find(e.name);
          return it != obj.end() ? *it : undefined();
        }
        return undefined();
      }
      case Expr::kIndex: {
        Value held;
        const Value& obj = operand(*e.kids[0], held);
        return index(obj, eval(*e.kids[1]), e.line);
      }
      case Expr::kSlice: {
        const Value obj = eval(*e.kids[0]);
        auto bound = [&](size_t k) { return e.kids[k] ? eval(*e.kids[k]) : Value(); };
        const Value b = bound(1), en = bound(2), st = bound(3);
        if (obj.is_array()) {
          Value r = Value::array();
          for (size_t i : slice_indices(obj.size(), b, en, st, e.line)) r.push_back(obj[i]);
          return r;
        }
        if (obj.is_string()) {
          const auto cps = code_points(obj.get_ref<const std::string&>());
          std::string r;
          for (size_t i : slice_indices(cps.size(), b, en, st, e.line)) r += cps[i];
          return r;
        }
        fail_line(e.line, str("cannot slice a ", type_name(obj)));
      }
      case Expr::kCall:
        return eval_call(e);
      case Expr::kFilter:
        return call_filter(e.name, eval(*e.kids[0]), eval_args(e, 1));
      case Expr::kTest:
        return call_test(e.name, eval(*e.kids[0]), eval_args(e, 1)) != e.negate;
      case Expr::kUnary: {
        const Value v = eval(*e.kids[0]);
        if (e.name == "not") return !truthy(v);
        if (!is_num(v))
          fail_line(e.line, str("bad operand type for unary ", e.name, ": '", type_name(v), "'"));
        if (e.name == "+") return is_int(v) ? Value(as_int(v)) : v;
        return is_int(v) ? Value(-as_int(v)) : Value(-as_double(v));
      }
      case Expr::kBinary:
        return eval_binary(e);
      case Expr::kCond:
        if (truthy(eval(*e.kids[1]))) return eval(*e.kids[0]);
        return e.kids[2] ? eval(*e.kids[2]) : undefined();
    }
    fail_line(e.line, "unhandled expression");
  }

  // The value of `e` without copying it when it is a stored one (a name, or an attribute or item
  // of one): templates index `messages` at every turn, and copying it each time would make
  // rendering quadratic in the conversation. Otherwise `e` is evaluated into `held`.
  const Value& operand(const Expr& e, Value& held) {
    if (const Value* p = stored(e)) return *p;
    held = eval(e);
    return held;
  }

  const Value* stored(const Expr& e) {
    if (e.kind == Expr::kName) return find(e.name);
    if (e.kind != Expr::kAttr && e.kind != Expr::kIndex) return nullptr;
    const Value* obj = stored(*e.kids[0]);
    if (!obj) return nullptr;
    if (e.kind == Expr::kAttr) {
      if (!obj->is_object()) return nullptr;
      auto it = obj->find(e.name);
      return it != obj->end() ? &*it : nullptr;
    }
    const Value key = eval(*e.kids[1]);
    if (obj->is_object() && key.is_string()) {
      auto it = obj->find(key.get_ref<const std::string&>());
      return it != obj->end() ? &*it : nullptr;
    }
    if (obj->is_array() && is_int(key)) {
      int64_t i = as_int(key);
      if (i < 0) i += static_cast<int64_t>(obj->size());
      return i >= 0 && i < static_cast<int64_t>(obj->size()) ? &(*obj)[static_cast<size_t>(i)] : nullptr;
    }
    return nullptr;
  }

  static Value index(const Value& obj, const Value& key, int line) {
    if (is_undefined(obj)) fail_line(line, "cannot index an undefined value");
    if (obj.is_object()) {
      if (!key.is_string()) return undefined();
      auto it = obj.find(key.get_ref<const std::string&>());
      return it != obj.end() ? *it : undefined();
    }
    if ((obj.is_array() || obj.is_string()) && is_int(key)) {
      const auto cps =
          obj.is_string() ? code_points(obj.get_ref<const std::string&>()) : std::vector<std::string_view>{};
      const int64_t n = obj.is_array() ? static_cast<int64_t>(obj.size()) : static_cast<int64_t>(cps.size());
      int64_t i = as_int(key);
      if (i < 0) i += n;
      if (i < 0 || i >= n) return undefined();
      return obj.is_array() ? obj[static_cast<size_t>(i)] : Value(std::string(cps[static_cast<size_t>(i)]));
    }
    return undefined();
  }

  Value eval_binary(const Expr& e) {
    const std::string& op = e.name;
    const Value a = eval(*e.kids[0]);
    if (op == "and") return truthy(a) ? eval(*e.kids[1]) : a;
    if (op == "or") return truthy(a) ? a : eval(*e.kids[1]);
    const Value b = eval(*e.kids[1]);
    if (op == "~") return to_str(a) + to_str(b);
    if (op == "==") return py_equal(a, b);
    if (op == "!=") return !py_equal(a, b);
    if (op == "<") return less(a, b, e.line);
    if (op == ">") return less(b, a, e.line);
    if (op == "<=") return !less(b, a, e.line);
    if (op == ">=") return !less(a, b, e.line);
    if (op == "in") return contains(a, b, e.line);
    if (op == "not in") return !contains(a, b, e.line);
    return arith(op, a, b, e.line);
  }

  std::vector<std::map<std::string, Value>> scopes_;
  std::map<std::string, const Stmt*> macros_;
};

}  // namespace

Template::Template(std::string_view source) : program_(std::make_unique<Program>()) {
  program_->body = parse_template(source);
}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const Value& context) const {
  QWEN_CHECK(context.is_object(), "chat template variables must be an object, got ", context.type_name());
  std::string out;
  Evaluator(context).exec(program_->body, out);
  return out;
}

}  // namespace qwen::jinja
