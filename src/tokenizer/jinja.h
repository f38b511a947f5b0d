// A Jinja2 template engine for chat templates (tokenizer.chat_template). It implements the
// subset of Jinja that HF chat templates use, with the settings transformers renders them with
// (trim_blocks, lstrip_blocks, loopcontrols, raise_exception, strftime_now, tojson as
// json.dumps(ensure_ascii=False)), so the output equals jinja2's byte for byte
// (tests/python/test_chat_templates.py). Anything outside the subset is an error naming the
// template line, at parse time where it can be seen there (tags, filters, tests), else when
// evaluated (methods, functions): never a silent skip.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qwen::jinja {

// Template values are JSON values, objects in insertion order (tojson and dict iteration keep
// the order the caller gave, as Python dicts do). Jinja's Undefined is the `discarded` value.
using Value = nlohmann::ordered_json;

struct Program;  // parsed template (jinja_ast.h)

class Template {
 public:
  // Parses `source`; throws qwen::Error "chat template line N: ..." on a syntax error or an
  // unsupported construct.
  explicit Template(std::string_view source);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the variables of `context` (a JSON object). raise_exception(msg) in the template
  // throws qwen::Error whose message contains msg; evaluation errors name the template line.
  std::string render(const Value& context) const;

 private:
  std::unique_ptr<Program> program_;
};

// Python's json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort_keys) (indent < 0:
// none): ", " and ": " separators without indent, "," and ": " with it. Used by the tojson filter
// and by callers that need a template's JSON spelling (tool-call arguments).
std::string dumps(const Value& v, int indent = -1, bool sort_keys = false);

}  // namespace qwen::jinja
