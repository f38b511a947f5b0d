// tool_choice enforcement: a grammar whose sentences are Qwen tool-call blocks
// (tokenizer/tool_calls.h) laid out exactly as Qwen2.5's chat template writes an assistant's calls,
//   <tool_call>\n{"name": "<a tool's name>", "arguments": <JSON>}\n</tool_call>
// one, or one or more joined by "\n", with each call's arguments valid against its own tool's
// parameters schema (json_schema.h). The parser turns such text back into the same calls, so a
// constrained reply always yields tool_calls.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

#include "sampling/grammar.h"

namespace qwen {

class ToolCallGrammar {
 public:
  // A tool the reply may call. parameters null or {}: any JSON object. Otherwise it must describe
  // an object ("type": "object" or "properties"), since the parser only takes object arguments;
  // throws SchemaError (naming the keyword) for that and for anything json_schema.h refuses.
  void add_tool(const std::string& name, const nlohmann::ordered_json& parameters);
  // The grammar: exactly one call (parallel false) or one or more. Needs at least one tool, and
  // no two of one name.
  std::shared_ptr<const Grammar> finish(bool parallel);

 private:
  // The rule matching the keys of tools_[lo, hi) from byte `depth` on, then the tool's arguments.
  int32_t name_trie(size_t lo, size_t hi, size_t depth);

  Grammar g_;
  // Per tool: its key (the name as a JSON string, then `, "arguments": `) and its arguments' rule.
  std::vector<std::pair<std::string, int32_t>> tools_;
};

}  // namespace qwen
