// Internal to the Jinja engine (jinja.h): the syntax tree the parser (jinja_parse.cpp) builds and
// the evaluator (jinja_eval.cpp) walks, and the value helpers both use (jinja_value.cpp).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja.h"

namespace qwen::jinja {

struct Expr;
using ExprP = std::unique_ptr<Expr>;

struct Expr {
  enum Kind {
    kLiteral,  // literal
    kName,     // name
    kList,     // kids: items (tuples are lists)
    kDict,     // kids: key, value, key, value, ...
    kAttr,     // kids[0].name
    kIndex,    // kids[0][kids[1]]
    kSlice,    // kids[0][kids[1]:kids[2]:kids[3]], absent bounds null
    kCall,     // kids[0](kids[1..], kwargs)
    kFilter,   // kids[0] | name(kids[1..], kwargs)
    kTest,     // kids[0] is [not] name(kids[1..])
    kUnary,    // name in {"-", "+", "not"}, kids[0]
    kBinary,   // kids[0] name kids[1]; name is the operator ("and", "or", "+", "~", "in", "not in", ...)
    kCond,     // kids[0] if kids[1] else kids[2] (kids[2] null: undefined)
  };
  Kind kind;
  int line;
  Value literal;
  std::string name;
  bool negate = false;  // kTest: "is not"
  std::vector<ExprP> kids;
  std::vector<std::pair<std::string, ExprP>> kwargs;
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (cond, body), else_body
    kFor,       // for targets in expr [if filter]: body [else: else_body]
    kSet,       // set targets = expr; or set targets[0].attr = expr
    kSetBlock,  // set targets[0] %}body{% endset
    kMacro,     // macro name(params): body
    kBreak,
    kContinue,
    kBlock,  // body rendered as is ({% generation %}: transformers' assistant-mask marker)
  };
  Kind kind;
  int line;
  std::string text;
  ExprP expr;
  ExprP filter;
  std::vector<std::string> targets;
  std::string attr;
  std::vector<std::pair<ExprP, Body>> branches;
  Body body, else_body;
  std::vector<std::pair<std::string, ExprP>> params;  // macro parameters and defaults (null: none)
};

struct Program {
  Body body;
};

Body parse_template(std::string_view source);
// Names the evaluator implements; the parser rejects others where they are written.
bool known_filter(const std::string& name);
bool known_test(const std::string& name);
// "chat template line N: " + message, as qwen::Error.
[[noreturn]] void fail_line(int line, const std::string& message);

// ---- builtins (jinja_builtins.cpp) --------------------------------------------------------------

// Evaluated call arguments; line is where the call is written (for errors).
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  int line = 0;
};
Value call_filter(const std::string& name, const Value& v, const Args& a);
bool call_test(const std::string& name, const Value& v, const Args& a);
// obj.name(args): str, dict methods. Throws naming the line for anything else.
Value call_method(const Value& obj, const std::string& name, const Args& a);
// Global functions other than macros: range, namespace, dict, raise_exception, strftime_now;
// `found` false when `name` is none of them.
Value call_global(const std::string& name, const Args& a, bool& found);
bool is_global_function(const std::string& name);

// ---- value helpers (jinja_value.cpp) -----------------------------------------------------------

inline Value undefined() {
  return Value(Value::value_t::discarded);
}
inline bool is_undefined(const Value& v) {
  return v.is_discarded();
}
bool truthy(const Value& v);
// str(v) as Python prints it: None, True, 1.5, ['a', 1], {'k': 'v'}; Undefined is "".
std::string to_str(const Value& v);
std::string py_repr(const Value& v);
bool py_equal(const Value& a, const Value& b);
// Python's str.isspace() for one code point.
bool py_space(uint32_t cp);
// Python str.strip/lstrip/rstrip: chars null strips Python whitespace, else those code points.
std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right);
// A string as its code points' byte ranges (for len, indexing and slicing by character).
std::vector<std::string_view> code_points(std::string_view s);
const char* type_name(const Value& v);

}  // namespace qwen::jinja
