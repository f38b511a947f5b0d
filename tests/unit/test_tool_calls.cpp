// The <tool_call> parser (src/tokenizer/tool_calls.h) on strings: calls extracted with their
// name and arguments (as JSON text, Python json.dumps spelling), content kept around them,
// malformed blocks kept as text, and streaming in every split of the text giving the same content
// and calls as the whole. Every check is exact string equality: tolerance none.
#include <gtest/gtest.h>

#include "tokenizer/tool_calls.h"

namespace qwen {
namespace {

const char* kTwoCalls =
    "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"東京\", \"days\": "
    "2}}\n"
    "</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";

TEST(ToolCalls, WholeText) {
  ParsedReply r = parse_tool_calls(kTwoCalls);
  EXPECT_EQ(r.content, "Let me check.");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(r.calls[0].arguments, "{\"city\": \"東京\", \"days\": 2}");
  EXPECT_EQ(r.calls[1].name, "now");
  EXPECT_EQ(r.calls[1].arguments, "{}");
  EXPECT_EQ(r.calls[0].id.size(), 29u);  // "call_" + 24 hex digits
  EXPECT_NE(r.calls[0].id, r.calls[1].id);
  const auto j = tool_call_json(r.calls[0], 0);
  EXPECT_EQ(j["type"], "function");
  EXPECT_EQ(j["function"]["name"], "get_weather");
  EXPECT_EQ(j["index"], 0);

  // Arguments given as a JSON string pass through; a call with no text around it has no content.
  r = parse_tool_calls("<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\":1}\"}</tool_call>\n");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, "{\"a\":1}");
  EXPECT_EQ(r.content, "");
}

TEST(ToolCalls, NotCallsStayText) {
  for (const char* text :
       {"plain answer, no calls\n", "<tool_call>not json</tool_call> after",
        "<tool_call>{\"arguments\": {}}</tool_call>", "<tool_call>[1, 2]</tool_call>",
        "<tool_call>{\"name\": \"f\"", "a < b and <tool_c", "x <tool_call>{\"name\": \"f\"} (unclosed)"}) {
    const ParsedReply r = parse_tool_calls(text);
    EXPECT_TRUE(r.calls.empty()) << text;
    EXPECT_EQ(r.content, text);
  }
}

TEST(ToolCalls, StreamingEqualsWholeInEverySplit) {
  const std::string text = std::string("Hi <") + kTwoCalls + " bye <tool";
  const ParsedReply whole = parse_tool_calls(text);
  ASSERT_EQ(whole.calls.size(), 2u);
  for (size_t a = 0; a <= text.size(); ++a) {
    for (size_t b = a; b <= text.size(); b += 7) {
      ToolCallParser p;
      std::string content = p.push(text.substr(0, a));
      std::vector<ToolCall> calls = p.take_calls();
      content += p.push(text.substr(a, b - a));
      for (ToolCall& c : p.take_calls()) calls.push_back(std::move(c));
      content += p.push(text.substr(b));
      content += p.flush();
      for (ToolCall& c : p.take_calls()) calls.push_back(std::move(c));
      EXPECT_EQ(content, whole.content) << a << " " << b;
      ASSERT_EQ(calls.size(), 2u) << a << " " << b;
      EXPECT_EQ(calls[0].arguments, whole.calls[0].arguments);
      EXPECT_EQ(calls[1].name, "now");
    }
  }
  // Content before the first call is released before the call completes; "<" alone is held.
  ToolCallParser p;
  EXPECT_EQ(p.push("Sure <"), "Sure");
  EXPECT_EQ(p.push("b>"), " <b>");
  EXPECT_EQ(p.push("<tool_call>{\"name\": \"f\", "), "");
  EXPECT_EQ(p.n_calls(), 0);
  EXPECT_EQ(p.push("\"arguments\": {}}</tool_call>"), "");
  EXPECT_EQ(p.n_calls(), 1);
}

}  // namespace
}  // namespace qwen
