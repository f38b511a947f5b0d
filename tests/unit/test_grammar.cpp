// Constrained decoding (sampling/grammar.h, sampling/json_schema.h):
// - per schema, hand-written strings that must be accepted and rejected (exact);
// - the token mask on a small synthetic vocabulary equals brute force (each token's bytes fed to a
//   copy of the state) in every state along random masked walks: exact set equality;
// - random masked walks that end (end-of-generation taken) end in text the grammar matches and
//   nlohmann parses (schema validation proper is tests/python/test_server_grammar.py's, with the
//   `jsonschema` package);
// - refused schemas name their keyword.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "sampling/grammar.h"
#include "sampling/json_schema.h"

namespace qwen {
namespace {

using json = nlohmann::ordered_json;  // properties are generated in key order

std::shared_ptr<const Grammar> schema(const char* text) {
  return json_schema_grammar(json::parse(text));
}

TEST(Grammar, RepeatBounds) {
  Grammar g;
  const Grammar::Sym a = g.byte('a'), comma = g.byte(',');
  const int32_t r = g.repeat(a, 2, 4, &comma);
  g.finish(r);
  EXPECT_FALSE(g.matches(""));
  EXPECT_FALSE(g.matches("a"));
  EXPECT_TRUE(g.matches("a,a"));
  EXPECT_TRUE(g.matches("a,a,a,a"));
  EXPECT_FALSE(g.matches("a,a,a,a,a"));
  EXPECT_FALSE(g.matches("a,,a"));
  EXPECT_FALSE(g.matches("aa"));
}

TEST(JsonSchema, ObjectPropertiesRequiredAndOptional) {
  auto g = schema(R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"},
                      "c": {"type": "boolean"}}, "required": ["b"], "additionalProperties": false})");
  EXPECT_TRUE(g->matches(R"({"b":"x"})"));
  EXPECT_TRUE(g->matches(R"({"a":1,"b":"x"})"));
  EXPECT_TRUE(g->matches(R"({ "a" : -12 , "b":"x","c":true })"));
  EXPECT_TRUE(g->matches("{\n  \"b\": \"\\u00e9\\n\",\n  \"c\": false\n}"));
  EXPECT_FALSE(g->matches(R"({"a":1})"));            // b required
  EXPECT_FALSE(g->matches(R"({"b":"x","d":1})"));    // no additional properties
  EXPECT_FALSE(g->matches(R"({"a":1.5,"b":"x"})"));  // integer
  EXPECT_FALSE(g->matches(R"({"a":01,"b":"x"})"));   // leading zero
  EXPECT_FALSE(g->matches(R"({,"b":"x"})"));
  EXPECT_FALSE(g->matches(R"({"b":"x",})"));
  EXPECT_FALSE(g->matches(R"({"b":"x"} )"));     // nothing after the value
  EXPECT_FALSE(g->matches("{\"b\":\"\x01\"}"));  // raw control character in a string
}

TEST(JsonSchema, WhitespaceIsBounded) {
  auto g = schema(R"({"type": "array", "items": {"type": "null"}})");
  EXPECT_TRUE(g->matches("[" + std::string(kMaxWhitespace, ' ') + "null]"));
  EXPECT_FALSE(g->matches("[" + std::string(kMaxWhitespace + 1, ' ') + "null]"));
}

TEST(JsonSchema, ArraysStringsNumbersEnums) {
  auto g = schema(R"({"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 3},
                      "minItems": 1, "maxItems": 2})");
  EXPECT_TRUE(g->matches(R"(["a"])"));
  EXPECT_TRUE(g->matches(R"(["abc", "é€😀"])"));  // lengths count code points
  EXPECT_FALSE(g->matches(R"([])"));
  EXPECT_FALSE(g->matches(R"(["a","b","c"])"));
  EXPECT_FALSE(g->matches(R"([""])"));
  EXPECT_FALSE(g->matches(R"(["abcd"])"));
  EXPECT_FALSE(g->matches("[\"\xC3\"]"));          // truncated UTF-8
  EXPECT_FALSE(g->matches("[\"\xED\xA0\x80\"]"));  // UTF-8 surrogate

  auto n = schema(R"({"type": "number"})");
  for (const char* ok : {"0", "-0", "12.5", "1e5", "-3.25E-7", "9999999999999999"})
    EXPECT_TRUE(n->matches(ok)) << ok;
  for (const char* bad : {"", "-", "1.", ".5", "+1", "1e", "12345678901234567", "NaN"})
    EXPECT_FALSE(n->matches(bad)) << bad;

  auto e = schema(R"({"enum": ["red", 2, null, {"k": [1]}]})");
  for (const char* ok : {R"("red")", "2", "null", R"({"k":[1]})"}) EXPECT_TRUE(e->matches(ok)) << ok;
  for (const char* bad : {R"("blue")", "3", R"({"k": [1]})"}) EXPECT_FALSE(e->matches(bad)) << bad;

  auto typed_enum = schema(R"({"type": "string", "enum": ["a", 1]})");
  EXPECT_TRUE(typed_enum->matches(R"("a")"));
  EXPECT_FALSE(typed_enum->matches("1"));

  auto c = schema(R"({"const": "fixed"})");
  EXPECT_TRUE(c->matches(R"("fixed")"));
  EXPECT_FALSE(c->matches(R"("other")"));
}

// Integer bounds: against plain arithmetic on every value near each bound, at each power of ten
// in between and at random ones, for ranges across signs and digit counts (exact).
TEST(JsonSchema, IntegerRangesEqualArithmetic) {
  std::mt19937_64 rng(3);
  std::vector<std::pair<int64_t, int64_t>> ranges = {{0, 0},
                                                     {0, 9},
                                                     {1, 10},
                                                     {-5, 5},
                                                     {7, 7},
                                                     {10, 99},
                                                     {19, 1234},
                                                     {-1234, -19},
                                                     {-99, 100},
                                                     {123, 98765},
                                                     {-9999999999999999, 3}};
  for (int k = 0; k < 30; ++k) {
    int64_t a = int64_t(rng() % 2000000) - 1000000, b = int64_t(rng() % 2000000) - 1000000;
    ranges.emplace_back(std::min(a, b), std::max(a, b));
  }
  for (const auto& [lo, hi] : ranges) {
    auto g = json_schema_grammar(json{{"type", "integer"}, {"minimum", lo}, {"maximum", hi}});
    std::vector<int64_t> probe;
    for (int64_t d = -30; d <= 30; ++d) {
      probe.push_back(lo + d);
      probe.push_back(hi + d);
    }
    for (int64_t p = 1; p <= 1000000000; p *= 10) {
      probe.push_back(p);
      probe.push_back(-p);
      probe.push_back(p - 1);
      probe.push_back(1 - p);
    }
    for (int k = 0; k < 200; ++k) probe.push_back(lo + int64_t(rng() % uint64_t(hi - lo + 1)));
    for (int64_t v : probe) {
      EXPECT_EQ(g->matches(std::to_string(v)), v >= lo && v <= hi) << v << " in [" << lo << ", " << hi << "]";
    }
    EXPECT_FALSE(g->matches("-0"));
    std::string leading_zero = "0";  // built by append: GCC 12 warns falsely on "0" + string
    leading_zero += std::to_string(std::max<int64_t>(lo, 1));
    EXPECT_FALSE(g->matches(leading_zero));
  }
  auto ex = json_schema_grammar(
      json::parse(R"({"type": "integer", "exclusiveMinimum": 2.5, "exclusiveMaximum": 5})"));
  for (int v = 0; v < 8; ++v) EXPECT_EQ(ex->matches(std::to_string(v)), v == 3 || v == 4) << v;
  auto pos = json_schema_grammar(json::parse(R"({"type": "integer", "minimum": 0})"));
  EXPECT_TRUE(pos->matches("9999999999999999"));
  EXPECT_FALSE(pos->matches("-1"));
}

TEST(JsonSchema, AnyOfTypeListsAndRefs) {
  auto g = schema(R"({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                        "required": ["v"]}},
                      "anyOf": [{"$ref": "#/$defs/node"}, {"type": ["string", "null"]}]})");
  EXPECT_TRUE(g->matches(R"({"v":1})"));
  EXPECT_TRUE(g->matches(R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[]}]})"));
  EXPECT_FALSE(g->matches(R"({"kids":[],"v":1})"));  // properties in the schema's order
  EXPECT_TRUE(g->matches(R"("s")"));
  EXPECT_TRUE(g->matches("null"));
  EXPECT_FALSE(g->matches(R"({"v":1,"kids":[{}]})"));
  EXPECT_FALSE(g->matches("1"));

  // Overlapping branches: both parses stay alive until one dies.
  auto o =
      schema(R"({"oneOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                                {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "null"}},
                                 "required": ["a", "b"]}]})");
  EXPECT_TRUE(o->matches(R"({"a":"x"})"));
  EXPECT_TRUE(o->matches(R"({"a":"x","b":null})"));
  EXPECT_FALSE(o->matches(R"({"b":null})"));
}

TEST(JsonSchema, AnyObject) {
  auto g = json_object_grammar();
  EXPECT_TRUE(g->matches("{}"));
  EXPECT_TRUE(g->matches(R"({"a": [1, {"b": null}, "x", true, -2.5e3], "a": {}})"));
  EXPECT_FALSE(g->matches("[]"));
  EXPECT_FALSE(g->matches(R"("s")"));
  EXPECT_FALSE(g->matches(R"({"a"})"));
  EXPECT_FALSE(g->matches(R"({a: 1})"));
}

// Two schemas compiled into one grammar (add_json_schema, as tool_grammar.h does per tool): each
// $ref resolves inside its own document, though both name "#/$defs/v". Exact match checks.
TEST(JsonSchema, SchemasShareOneGrammar) {
  Grammar g;
  const int32_t a =
      add_json_schema(g, json::parse(R"({"$ref": "#/$defs/v", "$defs": {"v": {"type": "integer"}}})"));
  const int32_t b =
      add_json_schema(g, json::parse(R"({"$ref": "#/$defs/v", "$defs": {"v": {"enum": ["x"]}}})"));
  const int32_t root = g.new_rule();
  g.add_alt(root, {Grammar::ref(a), g.byte(';'), Grammar::ref(b)});
  g.finish(root);
  EXPECT_TRUE(g.matches("12;\"x\""));
  EXPECT_FALSE(g.matches("\"x\";\"x\""));
  EXPECT_FALSE(g.matches("12;12"));
}

TEST(JsonSchema, RefusedKeywordsAreNamed) {
  struct Case {
    const char* schema;
    const char* keyword;
    bool unsupported;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"type": "string", "pattern": "^a"})", "pattern", true},
           {R"({"type": "string", "format": "date"})", "format", true},
           {R"({"type": "object", "properties": {"x": {"type": "number", "minimum": 3}}})", "minimum", true},
           {R"({"type": "integer", "minimum": 3, "exclusiveMaximum": 3})", "minimum", false},
           {R"({"type": "integer", "exclusiveMinimum": true})", "exclusiveMinimum", false},
           {R"({"type": "object", "properties": {"x": {}}, "additionalProperties": true})",
            "additionalProperties", true},
           {R"({"allOf": [{}]})", "allOf", true},
           {R"({"type": "array", "items": {"type": "string"}, "uniqueItems": true})", "uniqueItems", true},
           {R"({"$ref": "https://example.com/s.json"})", "$ref", true},
           {R"({"$ref": "#/$defs/missing"})", "$ref", false},
           {R"({"type": "strin"})", "type", false},
           {R"({"type": "array", "minItems": 3, "maxItems": 2})", "maxItems", false},
           {R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})", "required", true},
           {R"({"enum": ["a"], "maxLength": 3})", "maxLength", true},
           {R"(false)", "false", false},
       }) {
    try {
      json_schema_grammar(json::parse(c.schema));
      ADD_FAILURE() << "accepted: " << c.schema;
    } catch (const SchemaError& e) {
      EXPECT_EQ(e.keyword(), c.keyword) << c.schema;
      EXPECT_EQ(e.unsupported(), c.unsupported) << c.schema;
      EXPECT_NE(std::string(e.what()).find(std::string("'") + c.keyword + "'"), std::string::npos)
          << e.what();
    }
  }
}

// 40 strings of up to 10,000 characters unroll into about 1.2 million symbols: refused by size.
TEST(JsonSchema, RefusesSchemasThatCompileTooLarge) {
  auto key = [](int i) {  // appended: GCC 12 warns falsely on "p" + std::string
    std::string k = "p";
    return k += std::to_string(i);
  };
  json props = json::object();
  for (int i = 0; i < 40; ++i) props[key(i)] = {{"type", "string"}, {"maxLength", 10000}};
  try {
    json_schema_grammar(json{{"type", "object"}, {"properties", props}});
    ADD_FAILURE() << "accepted";
  } catch (const SchemaError& e) {
    EXPECT_EQ(e.keyword(), "schema");
    EXPECT_NE(std::string(e.what()).find("grammar symbols"), std::string::npos) << e.what();
  }
  for (int i = 10; i < 40; ++i) props.erase(key(i));  // 10 of them fit
  EXPECT_NO_THROW(json_schema_grammar(json{{"type", "object"}, {"properties", props}}));
}

// A byte-level vocabulary in miniature: every single byte (so any text is reachable, as in
// Qwen's), then random strings over a JSON-heavy alphabet, a duplicate, and one end-of-generation id.
std::vector<std::string> small_vocab(uint64_t seed, int n_multi) {
  std::vector<std::string> v;
  for (int b = 0; b < 256; ++b) v.emplace_back(1, char(b));
  const std::vector<std::string> alphabet = {"{", "}", "[", "]", "\"", ":",  ",",        " ",    "\n",  "a",
                                             "b", "k", "0", "1", "9",  "-",  ".",        "e",    "t",   "r",
                                             "u", "n", "l", "f", "s",  "\\", "\xC3\xA9", "\xC3", "\xA9"};
  std::mt19937_64 rng(seed);
  for (int i = 0; i < n_multi; ++i) {
    std::string s;
    const int len = 2 + int(rng() % 5);
    for (int k = 0; k < len; ++k) s += alphabet[rng() % alphabet.size()];
    v.push_back(s);
  }
  for (const char* s : {"true", "null", "false", "\": ", "\", \"", "{\"", "\"}", "  ", "red", "\"red\""})
    v.emplace_back(s);
  v.emplace_back("{\"");    // the same bytes under a second id
  v.emplace_back("<eog>");  // replaced by an end-of-generation id below
  return v;
}

const char* kSchemas[] = {
    R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
        "n": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["red", "blue", 1]}, "maxItems": 3},
        "x": {"type": "number"}, "ok": {"type": ["boolean", "null"]}}, "required": ["name", "n", "tags"]})",
    R"({"type": "array", "items": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "object",
        "properties": {"k": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}}}]},
        "minItems": 1, "maxItems": 3})",
};

// Masked walks: at each state the mask must equal brute force, then a random allowed token is taken.
void walk_and_compare(std::shared_ptr<const Grammar> g, int walks, uint64_t seed, int* n_checked) {
  std::vector<std::string> vocab = small_vocab(seed, 3000);
  const int32_t eog = int32_t(vocab.size() - 1);
  auto trie = std::make_shared<const TokenTrie>(vocab, std::vector<int32_t>{eog});
  std::mt19937_64 rng(seed);
  for (int w = 0; w < walks; ++w) {
    TokenMask mask(g, trie);
    GrammarState state(g);  // the brute-force twin
    std::string text;
    std::vector<uint8_t> allowed;
    for (int step = 0; step < 400 && !mask.ended(); ++step) {
      mask.allowed(allowed);
      std::vector<int32_t> ids;
      for (int32_t id = 0; id < int32_t(vocab.size()); ++id) {
        bool brute;
        if (id == eog) {
          brute = state.complete();
        } else {
          GrammarState copy = state;
          brute = copy.advance(vocab[size_t(id)]);
        }
        ASSERT_EQ(bool(allowed[size_t(id)]), brute)
            << "token " << id << " '" << vocab[size_t(id)] << "' after '" << text << "'";
        if (brute) ids.push_back(id);
      }
      ++*n_checked;
      // Prefer closing once long enough, so walks end within the step budget.
      int32_t pick = ids[rng() % ids.size()];
      if (step > 60 && state.complete()) pick = eog;
      mask.accept(pick);
      if (pick != eog) {
        ASSERT_TRUE(state.advance(vocab[size_t(pick)]));
        text += vocab[size_t(pick)];
      }
    }
    if (!mask.ended()) continue;  // a walk still inside a long string; the mask was checked
    EXPECT_TRUE(g->matches(text)) << text;
    EXPECT_TRUE(json::accept(text)) << text;
  }
}

TEST(TokenMask, EqualsBruteForceOnSmallVocab) {
  int checked = 0;
  for (size_t i = 0; i < std::size(kSchemas); ++i) walk_and_compare(schema(kSchemas[i]), 6, 11 + i, &checked);
  walk_and_compare(json_object_grammar(), 4, 99, &checked);
  EXPECT_GT(checked, 100);  // states compared (each over the whole vocabulary)
}

// Past 16,384 cached states the mask restarts its cache from the current state: 18,000 characters
// of strings, each a new state (a position in the unrolled bounds), cross that bound; the mask must
// still equal brute force after it (exact).
TEST(TokenMask, StaysExactAcrossCacheRestarts) {
  auto g = schema(R"({"type": "array", "items": {"type": "string", "maxLength": 9000}, "maxItems": 9000})");
  std::vector<std::string> vocab = small_vocab(5, 300);
  const int32_t eog = int32_t(vocab.size() - 1);
  auto trie = std::make_shared<const TokenTrie>(vocab, std::vector<int32_t>{eog});
  TokenMask mask(g, trie);
  GrammarState state(g);
  const std::string text = "[\"" + std::string(9000, 'a') + "\", \"" + std::string(9000, 'b');
  for (char c : text) mask.accept(int32_t(uint8_t(c)));  // ids 0..255 are the single bytes
  ASSERT_TRUE(state.advance(text));
  std::vector<uint8_t> allowed;
  mask.allowed(allowed);
  for (int32_t id = 0; id < eog; ++id) {
    GrammarState copy = state;
    ASSERT_EQ(bool(allowed[size_t(id)]), copy.advance(vocab[size_t(id)])) << vocab[size_t(id)];
  }
  mask.accept(int32_t('"'));
  mask.accept(int32_t(']'));
  EXPECT_TRUE(mask.complete());
}

TEST(TokenMask, NeedsAnEndOfGenerationToken) {
  auto trie = std::make_shared<const TokenTrie>(std::vector<std::string>{"{", "}"}, std::vector<int32_t>{});
  EXPECT_THROW(TokenMask(json_object_grammar(), trie), Error);
}

TEST(TokenMask, RefusesTokensOutsideTheGrammar) {
  std::vector<std::string> vocab = {"{", "}", "\"", "a", "x"};
  vocab.emplace_back("<eog>");
  auto trie = std::make_shared<const TokenTrie>(vocab, std::vector<int32_t>{5});
  TokenMask mask(json_object_grammar(), trie);
  EXPECT_THROW(mask.accept(5), Error);  // end of generation before the object is complete
  EXPECT_THROW(mask.accept(4), Error);
  mask.accept(0);
  std::vector<float> logits(6, 0.f);
  mask.apply(logits);
  EXPECT_EQ(logits[1], 0.f);  // "}"
  EXPECT_EQ(logits[2], 0.f);  // '"' opens a key
  EXPECT_TRUE(std::isinf(logits[0]) && std::isinf(logits[3]) && std::isinf(logits[5]));
  mask.accept(1);
  EXPECT_TRUE(mask.complete());
  logits.assign(6, 0.f);
  mask.apply(logits);
  EXPECT_EQ(logits[5], 0.f);  // now only end of generation
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(std::isinf(logits[size_t(i)])) << i;
  mask.accept(5);
  EXPECT_TRUE(mask.ended());
}

}  // namespace
}  // namespace qwen
