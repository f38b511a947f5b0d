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

#include "sampling/grammar.h"

namespace qwen {

class ToolCallGrammar {
 public:
  ToolCallGrammar();
  // A tool the reply may call. parameters null or {}: any JSON object. Otherwise it must describe
  // an object ("type": "object" or "properties"), since the parser only takes object arguments;
  // throws SchemaError (naming the keyword) for that and for anything json_schema.h refuses.
  void add_tool(const std::string& name, const nlohmann::ordered_json& parameters);
  // The grammar: exactly one call (parallel false) or one or more. Needs at least one tool.
  std::shared_ptr<const Grammar> finish(bool parallel);

 private:
  Grammar g_;
  int32_t call_;  // one call of any tool added so far
  bool any_ = false;
};

}  // namespace qwen
