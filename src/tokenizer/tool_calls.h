// Tool calls in the Qwen2.5 / Qwen3 format: the model writes each call as
//   <tool_call>\n{"name": "fn", "arguments": {...}}\n</tool_call>
// (what their chat templates teach it). This turns generated text into OpenAI tool_calls, whole or
// while streaming. A block that is not such JSON stays part of the text: nothing is dropped.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace qwen {

// The block's tags. sampling/tool_grammar.h generates blocks in the layout above, several joined
// by "\n", as the templates write an assistant's calls.
inline constexpr std::string_view kToolCallOpen = "<tool_call>", kToolCallClose = "</tool_call>";

struct ToolCall {
  std::string id;  // "call_<24 hex>"
  std::string name;
  std::string arguments;  // JSON text, as OpenAI's function.arguments
};

// OpenAI's {"id", "type": "function", "function": {"name", "arguments"}}; with `index` for stream deltas.
nlohmann::json tool_call_json(const ToolCall& c, int index = -1);

// Incremental parser. push() returns the text that is content for certain: text that may still be
// the start of "<tool_call>" and a block still open are held back, and so is trailing whitespace
// (the newlines between calls are not content). A block ends at the first "</tool_call>" outside a
// JSON string, so arguments may hold that text (a block whose quotes never balance stays open,
// and is text at flush).
class ToolCallParser {
 public:
  std::string push(std::string_view text);
  // Calls completed since the last take (ids assigned).
  std::vector<ToolCall> take_calls();
  // End of generation: whatever is held back that is content (an unclosed block is kept as text;
  // trailing whitespace only when no call was made).
  std::string flush();
  int n_calls() const { return n_calls_; }

 private:
  // The block's end in buf_, or npos; scans on from scan_ with the string state kept.
  size_t find_close();
  // Back outside a block, the scan state reset.
  void leave_block();

  std::string buf_, pending_ws_;
  bool in_block_ = false;
  size_t scan_ = 0;  // in a block: buf_ is scanned up to here
  bool in_string_ = false, escaped_ = false;
  int n_calls_ = 0;
  std::vector<ToolCall> ready_;
};

// Whole text: content (without the blocks; surrounding whitespace stripped when calls were made)
// and the calls in order.
struct ParsedReply {
  std::string content;
  std::vector<ToolCall> calls;
};
ParsedReply parse_tool_calls(std::string_view text);

}  // namespace qwen
