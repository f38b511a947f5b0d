// The <tool_call> parser (src/tokenizer/tool_calls.h) on strings: calls extracted with their
// name and arguments (as JSON text, Python json.dumps spelling), content kept around them,
// malformed blocks kept as text, and streaming in every split of the text giving the same content
// and calls as the whole. Every check is exact string equality: tolerance none.
// tool_choice's grammar (sampling/tool_grammar.h): hand-written replies accepted and rejected
// (exact), and random masked walks over a small vocabulary that end give text the parser turns
// into calls of declared tools, arguments of each tool's shape: all of them must.
#include <gtest/gtest.h>

#include <random>

#include "sampling/json_schema.h"
#include "sampling/tool_grammar.h"
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

// A close tag inside a JSON string is part of the arguments (the grammar allows any string), in
// the whole text and in every two-way split of a stream.
TEST(ToolCalls, CloseTagInsideAStringIsArguments) {
  const std::string text =
      "Hi <tool_call>\n{\"name\": \"say\", \"arguments\": {\"s\": \"a\\\" </tool_call>\"}}\n</tool_call> ok";
  const std::string args = "{\"s\": \"a\\\" </tool_call>\"}";
  const ParsedReply r = parse_tool_calls(text);
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, args);
  EXPECT_EQ(r.content, "Hi ok");
  for (size_t a = 0; a <= text.size(); ++a) {
    ToolCallParser p;
    std::string content = p.push(text.substr(0, a));
    content += p.push(text.substr(a));
    content += p.flush();
    const std::vector<ToolCall> calls = p.take_calls();
    ASSERT_EQ(calls.size(), 1u) << a;
    EXPECT_EQ(calls[0].arguments, args) << a;
    EXPECT_EQ(content, "Hi ok") << a;
  }
}

using ojson = nlohmann::ordered_json;

const char* kWeatherParams = R"({"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
    "unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city"]})";
// $ref resolves inside each tool's own schema, though both share one grammar.
const char* kMoveParams = R"({"type": "object", "properties": {"to": {"$ref": "#/$defs/p"}},
    "required": ["to"], "$defs": {"p": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}}})";

std::shared_ptr<const Grammar> tool_grammar(bool parallel, bool only_weather = false) {
  ToolCallGrammar g;
  g.add_tool("get_weather", ojson::parse(kWeatherParams));
  if (!only_weather) {
    g.add_tool("move", ojson::parse(kMoveParams));
    g.add_tool("now", ojson());  // no parameters: any object
  }
  return g.finish(parallel);
}

std::string call(const std::string& name, const std::string& args) {
  return "<tool_call>\n{\"name\": \"" + name + "\", \"arguments\": " + args + "}\n</tool_call>";
}

TEST(ToolCallGrammar, AcceptsTheTemplatesLayoutOnly) {
  const auto one = tool_grammar(false), many = tool_grammar(true), named = tool_grammar(true, true);
  const std::string w = call("get_weather", "{\"city\": \"東京\", \"days\": 2}");
  const std::string m = call("move", "{\"to\": [1, -2]}");
  const std::string n = call("now", "{\"any\": [true, null]}");
  for (const std::string& text : {w, m, n}) {
    EXPECT_TRUE(one->matches(text)) << text;
    EXPECT_TRUE(many->matches(text)) << text;
  }
  EXPECT_TRUE(named->matches(w));
  EXPECT_FALSE(named->matches(m));  // only the named function
  EXPECT_TRUE(many->matches(w + "\n" + m + "\n" + n));
  EXPECT_FALSE(one->matches(w + "\n" + m));  // parallel_tool_calls false: exactly one
  EXPECT_TRUE(named->matches(w + "\n" + w));
  for (const std::string& bad :
       {std::string(""), "Sure. " + w, w + "\n", w + m, call("get_time", "{}"),
        call("get_weather", "{\"unit\": \"c\"}"),                   // "city" is required
        call("get_weather", "{\"city\": \"Tokyo\", \"days\": 9}"),  // above maximum
        call("move", "{\"to\": [1, 2, 3]}"),                        // maxItems of the $ref target
        call("now", "[]"),                                          // arguments are an object
        std::string(
            "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>")}) {  // not the template's layout
    EXPECT_FALSE(many->matches(bad)) << bad;
  }
  // Every accepted text parses back into the same calls, with nothing left as content.
  const ParsedReply r = parse_tool_calls(w + "\n" + m);
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "get_weather");
  EXPECT_EQ(r.calls[1].arguments, "{\"to\": [1, -2]}");
}

// 1000 tools, their names sharing prefixes: a call of each is accepted with the recogniser's
// stacks (at most 256 alive) never exceeded, since the names branch as a trie; exact.
TEST(ToolCallGrammar, ManyToolsStayWithinTheStackBound) {
  ToolCallGrammar calls;
  for (int i = 0; i < 1000; ++i) calls.add_tool("tool_" + std::to_string(i), ojson());
  const auto g = calls.finish(false);
  for (int i : {0, 1, 10, 100, 999}) {
    GrammarState state(g);
    EXPECT_TRUE(state.advance(call("tool_" + std::to_string(i), "{\"a\": 1}")));
    EXPECT_TRUE(state.complete());
  }
  EXPECT_FALSE(g->matches(call("tool_1000", "{}")));
  EXPECT_FALSE(g->matches(call("tool_", "{}")));
}

TEST(ToolCallGrammar, RefusesParametersThatAreNotAnObject) {
  for (const char* params : {R"({"type": "string"})", R"({"anyOf": [{"type": "object"}]})", "[]"}) {
    ToolCallGrammar g;
    try {
      g.add_tool("f", ojson::parse(params));
      ADD_FAILURE() << params;
    } catch (const SchemaError& e) {
      EXPECT_EQ(e.keyword(), "type") << params;
    }
  }
  ToolCallGrammar g;
  try {
    g.add_tool("f", ojson::parse(R"({"type": "object", "properties": {"a": {"pattern": "x"}}})"));
    ADD_FAILURE() << "pattern accepted";
  } catch (const SchemaError& e) {
    EXPECT_EQ(e.keyword(), "pattern");
    EXPECT_EQ(e.path(), "/properties/a");
  }
}

// Masked walks over a byte-level vocabulary (every byte a token, plus the tags and a few JSON
// pieces) taking random allowed tokens: each walk that ends must parse into calls of declared
// tools whose arguments are objects with only declared keys (schema validation proper is
// tests/python/test_server_tools.py's, with the `jsonschema` package). 200 walks, all must.
TEST(ToolCallGrammar, RandomMaskedWalksParseIntoDeclaredCalls) {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(1, char(b));
  for (const char* s : {"<tool_call>", "</tool_call>", "\n<tool_call>\n{\"", "\": ", "\", \"", "}\n",
                        "get_weather", "move", "now", "\"c\"", "city", "true", "null"})
    vocab.emplace_back(s);
  vocab.emplace_back("<eog>");
  const int32_t eog = int32_t(vocab.size() - 1);
  auto trie = std::make_shared<const TokenTrie>(vocab, std::vector<int32_t>{eog});
  std::mt19937_64 rng(42);
  int ended = 0, calls = 0;
  for (int w = 0; w < 200; ++w) {
    const bool parallel = w % 2 == 0;
    const auto g = tool_grammar(parallel);
    TokenMask mask(g, trie);
    std::string text;
    std::vector<uint8_t> allowed;
    for (int step = 0; step < 2000 && !mask.ended(); ++step) {
      mask.allowed(allowed);
      std::vector<int32_t> ids, closers;
      for (int32_t id = 0; id < int32_t(vocab.size()); ++id) {
        if (!allowed[size_t(id)]) continue;
        ids.push_back(id);
        const std::string& t = vocab[size_t(id)];
        if (id == eog || t == "\"" || t == "}" || t == "]" || t == "</tool_call>") closers.push_back(id);
      }
      // Half the time a token that closes something, so strings and nested values end and the
      // walk finishes within the step budget.
      const bool close = !closers.empty() && rng() % 2 == 0;
      const int32_t pick = close ? closers[rng() % closers.size()] : ids[rng() % ids.size()];
      mask.accept(pick);
      if (pick != eog) text += vocab[size_t(pick)];
    }
    ASSERT_TRUE(mask.ended()) << text;
    ++ended;
    ASSERT_TRUE(g->matches(text)) << text;
    const ParsedReply r = parse_tool_calls(text);
    EXPECT_EQ(r.content, "") << text;
    ASSERT_GE(r.calls.size(), 1u) << text;
    if (!parallel) {
      EXPECT_EQ(r.calls.size(), 1u) << text;
    }
    for (const ToolCall& c : r.calls) {
      const ojson args = ojson::parse(c.arguments);
      ASSERT_TRUE(args.is_object()) << c.arguments;
      if (c.name == "get_weather") {
        EXPECT_TRUE(args.contains("city")) << c.arguments;
        for (const auto& [k, v] : args.items()) EXPECT_TRUE(k == "city" || k == "unit" || k == "days") << k;
      } else if (c.name == "move") {
        EXPECT_TRUE(args.size() == 1 && args["to"].is_array() && args["to"].size() <= 2) << c.arguments;
      } else {
        EXPECT_EQ(c.name, "now");
      }
      ++calls;
    }
  }
  EXPECT_EQ(ended, 200);
  EXPECT_GE(calls, 200);
}

}  // namespace
}  // namespace qwen
