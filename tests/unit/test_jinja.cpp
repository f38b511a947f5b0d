// The Jinja engine (src/tokenizer/jinja*.cpp) on its own: expressions, tests, filters, methods,
// statements and whitespace control against jinja2's output stored in tests/data/jinja_cases.json
// (written by scripts/make_jinja_cases.py with transformers' settings), tojson spellings, and the
// errors (each must name the template line). Every check is exact string equality: tolerance none.
#include <gtest/gtest.h>

#include <fstream>

#include "tokenizer/jinja.h"
#include "util/check.h"

namespace qwen::jinja {
namespace {

std::string render(std::string_view src, const Value& ctx = Value::object()) {
  return Template(src).render(ctx);
}

// The message of the error `src` raises (at parse or render time); fails when none is raised.
std::string error_of(std::string_view src, const Value& ctx = Value::object()) {
  try {
    render(src, ctx);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error for: " << src;
  return {};
}

TEST(Jinja, MatchesJinja2OnStoredCases) {
  std::ifstream in(std::string(QWEN_SOURCE_DIR) + "/tests/data/jinja_cases.json");
  ASSERT_TRUE(in) << "tests/data/jinja_cases.json missing";
  const Value data = Value::parse(in);
  ASSERT_GE(data["cases"].size(), 20u);
  for (const Value& c : data["cases"]) {
    const std::string src = c[0].get<std::string>();
    std::string got;
    try {
      got = render(src, data["context"]);
    } catch (const Error& e) {
      ADD_FAILURE() << src << "\n  threw: " << e.what();
      continue;
    }
    EXPECT_EQ(got, c[1].get<std::string>()) << src;
  }
}

TEST(Jinja, ToJsonIsPythonJsonDumps) {
  const Value v = Value::parse(R"({"z": [1, 2.0, -0.5, 1e-7, 1e22], "a": {}, "s": "é\u0001\t/", "e": []})");
  EXPECT_EQ(dumps(v), R"({"z": [1, 2.0, -0.5, 1e-07, 1e+22], "a": {}, "s": "é\u0001\t/", "e": []})");
  EXPECT_EQ(dumps(v, -1, true),
            R"({"a": {}, "e": [], "s": "é\u0001\t/", "z": [1, 2.0, -0.5, 1e-07, 1e+22]})");
  EXPECT_EQ(dumps(Value::parse("[1, {\"k\": null}]"), 1), "[\n 1,\n {\n  \"k\": null\n }\n]");
  EXPECT_EQ(render("{{ x | tojson(indent=2, sort_keys=true) }}", {{"x", {{"b", 1}, {"a", 2}}}}),
            "{\n  \"a\": 2,\n  \"b\": 1\n}");
}

TEST(Jinja, UndefinedAndNone) {
  EXPECT_EQ(render("[{{ missing }}][{{ none }}][{{ m.x }}]", {{"m", {{"y", 1}}}}), "[][None][]");
  EXPECT_EQ(render("{{ missing | length }}{% for x in missing %}x{% endfor %}{{ missing is iterable }}"),
            "0True");
  EXPECT_EQ(render("{{ (none).x is defined }}"), "False");
}

TEST(Jinja, ErrorsNameTheLine) {
  struct Case {
    const char* src;
    const char* line;
    const char* words;
  };
  const Case cases[] = {
      {"a\n{{ x | wordwrap }}", "line 2", "unsupported filter 'wordwrap'"},
      {"\n\n{% include 'x' %}", "line 3", "unsupported tag"},
      {"{{ x is prime }}", "line 1", "unsupported test"},
      {"\n{% if x %}\nno end", "line 2", "has no '{% endif %}'"},
      {"{{ 'open }}", "line 1", "unterminated string"},
      {"{# never closed", "line 1", "unclosed comment"},
      {"x\n{% break %}", "line 2", "outside a for loop"},
      {"{{ 1 < 2 < 3 }}", "line 1", "chained comparisons"},
      {"\n{{ undefined_thing.attr }}", "line 2", "undefined"},
      {"{{ 'a' + 1 }}", "line 1", "unsupported operand types for +"},
      {"\n\n\n{{ 'x'.zfill(3) }}", "line 4", "unsupported method 'zfill'"},
      {"{{ lipsum() }}", "line 1", "'lipsum'"},
      {"{{ 1 // 0 }}", "line 1", "division by zero"},
      {"{% for a, b in [1] %}{% endfor %}", "line 1", "cannot unpack"},
      {"{{ 'é' | upper }}", "line 1", "non-ASCII"},
      {"{{ x | tojson }}", "line 1", "undefined"},
      {"{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", "line 1", "takes 1 arguments"},
  };
  for (const Case& c : cases) {
    const std::string what = error_of(c.src);
    EXPECT_NE(what.find(std::string("chat template ") + c.line + ":"), std::string::npos)
        << c.src << " -> " << what;
    EXPECT_NE(what.find(c.words), std::string::npos) << c.src << " -> " << what;
  }
  // raise_exception carries the template's message.
  EXPECT_NE(error_of("{{ raise_exception('Roles must alternate') }}").find("Roles must alternate"),
            std::string::npos);
  EXPECT_THROW(Template("{{ x }}").render(Value::array()), Error);
}

}  // namespace
}  // namespace qwen::jinja
