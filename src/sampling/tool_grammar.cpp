#include "sampling/tool_grammar.h"

#include <nlohmann/json.hpp>

#include "sampling/json_schema.h"
#include "tokenizer/tool_calls.h"
#include "util/check.h"

namespace qwen {

ToolCallGrammar::ToolCallGrammar() : call_(g_.new_rule()) {}

void ToolCallGrammar::add_tool(const std::string& name, const nlohmann::ordered_json& parameters) {
  QWEN_CHECK(!name.empty(), "ToolCallGrammar: a tool needs a name");
  int32_t args;
  if (parameters.is_null() || (parameters.is_object() && parameters.empty())) {
    args = add_json_object(g_);
  } else {
    const auto type = parameters.is_object() ? parameters.find("type") : parameters.end();
    const bool object = parameters.is_object() &&
                        (type != parameters.end() ? *type == "object" : parameters.contains("properties"));
    if (!object) {
      throw SchemaError(
          "a tool's parameters must describe an object (\"type\": \"object\"): a call's arguments are one",
          "type", "", /*unsupported=*/true);
    }
    args = add_json_schema(g_, parameters);
  }
  // The name as a JSON string: the template prints it bare between quotes, which is the same text
  // for every name that needs no escaping (OpenAI allows [a-zA-Z0-9_-] only).
  const std::string head =
      std::string(kToolCallOpen) + "\n{\"name\": " + nlohmann::json(name).dump() + ", \"arguments\": ";
  const std::string tail = "}\n" + std::string(kToolCallClose);
  g_.add_alt(call_, {Grammar::ref(g_.literal(head)), Grammar::ref(args), Grammar::ref(g_.literal(tail))});
  any_ = true;
}

std::shared_ptr<const Grammar> ToolCallGrammar::finish(bool parallel) {
  QWEN_CHECK(any_, "ToolCallGrammar: no tool to call");
  const Grammar::Sym sep = g_.byte('\n');
  g_.finish(parallel ? g_.repeat(Grammar::ref(call_), 1, -1, &sep) : call_);
  return std::make_shared<const Grammar>(std::move(g_));
}

}  // namespace qwen
