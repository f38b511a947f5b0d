// JSON schemas (and "any JSON object") compiled into byte grammars (sampling/grammar.h), so that
// constrained decoding produces text that parses as JSON and validates against the schema.
//
// Supported: type (one or a list), object properties / required / additionalProperties (false or
// absent: only the listed properties are generated; true or a schema only for objects without
// properties), array items / minItems / maxItems, string minLength / maxLength (code points),
// number, integer (with minimum / maximum / exclusiveMinimum / exclusiveMaximum; on number they are
// refused), boolean, null, enum, const, anyOf, oneOf (generated as anyOf: overlapping
// branches may match more than one), $ref to any "#/..." pointer of the same document ($defs,
// definitions, "#" itself), and the annotations (title, description, default, examples, ...).
// Every other keyword is refused by name (SchemaError), never ignored.
//
// The generated text has bounded whitespace (at most kMaxWhitespace bytes between tokens) and
// bounded numbers (integer part up to 16 digits, fraction up to 16, exponent up to 3), so a model
// cannot loop forever inside them; properties come in the schema's order.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "sampling/grammar.h"
#include "util/check.h"

namespace qwen {

class SchemaError : public Error {
 public:
  // keyword: the schema keyword at fault; path: JSON pointer of the schema holding it ("" = root);
  // unsupported: the keyword is valid JSON Schema but not implemented (else the value is invalid).
  SchemaError(const std::string& message, std::string keyword, std::string path, bool unsupported)
      : Error(message), keyword_(std::move(keyword)), path_(std::move(path)), unsupported_(unsupported) {}
  const std::string& keyword() const { return keyword_; }
  const std::string& path() const { return path_; }
  bool unsupported() const { return unsupported_; }

 private:
  std::string keyword_, path_;
  bool unsupported_;
};

constexpr int kMaxWhitespace = 20;
// Largest minLength / maxLength / minItems / maxItems: bounded repeats are unrolled.
constexpr int kMaxRepeatBound = 10000;
// Largest grammar a schema may compile to (symbols, about 16 bytes each while compiling), so a
// request body cannot make the server build an arbitrarily large one.
constexpr size_t kMaxGrammarSymbols = 500000;

// Key order matters (properties are generated in it), hence ordered_json.
std::shared_ptr<const Grammar> json_schema_grammar(const nlohmann::ordered_json& schema);
// Any JSON object (response_format json_object).
std::shared_ptr<const Grammar> json_object_grammar();

// The same as rules of a grammar still being built, for grammars that embed JSON values in other
// text (tool calls: tagged JSON whose "arguments" follow a tool's parameters). Each returns the
// rule matching the value; $ref resolves inside `schema` only, so several schemas can share g.
int32_t add_json_schema(Grammar& g, const nlohmann::ordered_json& schema);
int32_t add_json_object(Grammar& g);

}  // namespace qwen
