#include "sampling/tool_grammar.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "sampling/json_schema.h"
#include "tokenizer/tool_calls.h"
#include "util/check.h"

namespace qwen {

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
  tools_.emplace_back(nlohmann::json(name).dump() + ", \"arguments\": ", args);
}

int32_t ToolCallGrammar::name_trie(size_t lo, size_t hi, size_t depth) {
  const int32_t r = g_.new_rule();
  for (size_t i = lo; i < hi;) {
    const std::string& key = tools_[i].first;
    size_t j = i + 1;
    while (j < hi && tools_[j].first[depth] == key[depth]) ++j;
    if (j == i + 1) {  // one tool below here: the rest of its key, then its arguments
      g_.add_alt(r, {Grammar::ref(g_.literal(key.substr(depth))), Grammar::ref(tools_[i].second)});
    } else {
      g_.add_alt(r, {g_.byte(uint8_t(key[depth])), Grammar::ref(name_trie(i, j, depth + 1))});
    }
    i = j;
  }
  return r;
}

std::shared_ptr<const Grammar> ToolCallGrammar::finish(bool parallel) {
  QWEN_CHECK(!tools_.empty(), "ToolCallGrammar: no tool to call");
  // The names branch as a trie, so the recogniser keeps one parse through them rather than one
  // per tool (its stacks are bounded: grammar.h). Keys end in '"' unescaped, so no key is a prefix
  // of another and each leaf holds one tool.
  std::sort(tools_.begin(), tools_.end());
  for (size_t i = 1; i < tools_.size(); ++i) {
    QWEN_CHECK(tools_[i].first != tools_[i - 1].first, "ToolCallGrammar: two tools named ", tools_[i].first);
  }
  const int32_t call = g_.new_rule();
  g_.add_alt(call, {Grammar::ref(g_.literal(std::string(kToolCallOpen) + "\n{\"name\": ")),
                    Grammar::ref(name_trie(0, tools_.size(), 0)),
                    Grammar::ref(g_.literal("}\n" + std::string(kToolCallClose)))});
  const Grammar::Sym sep = g_.byte('\n');
  g_.finish(parallel ? g_.repeat(Grammar::ref(call), 1, -1, &sep) : call);
  return std::make_shared<const Grammar>(std::move(g_));
}

}  // namespace qwen
