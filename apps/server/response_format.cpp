#include "response_format.h"

#include <string>

#include "api.h"
#include "sampling/json_schema.h"
#include "util/check.h"

namespace qwen::server {

using json = nlohmann::json;

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message, const char* code) {
  throw ApiError(400, message, code, param);
}

// Only `allowed` keys may appear in object v (named `param`): anything else is refused by name.
void only_keys(const json& v, const std::string& param, std::initializer_list<const char*> allowed) {
  for (const auto& [key, value] : v.items()) {
    bool ok = false;
    for (const char* a : allowed) ok |= key == a;
    if (!ok) {
      refuse(param + "." + key.substr(0, 64), str("'", param, ".", key.substr(0, 64), "' is not supported"),
             "unsupported_value");
    }
  }
}

// The schema at `path` of the body, from the key-ordered parse of its text.
std::shared_ptr<const Grammar> compile(std::string_view raw_body, const std::vector<const char*>& path,
                                       const std::string& param) {
  nlohmann::ordered_json ordered;
  try {
    ordered = nlohmann::ordered_json::parse(raw_body);
  } catch (const nlohmann::ordered_json::exception&) {
    QWEN_FAIL("the request body parsed once but not with key order kept");
  }
  const nlohmann::ordered_json* node = &ordered;
  for (const char* key : path) {
    QWEN_ASSERT(node->is_object() && node->contains(key));
    node = &(*node)[key];
  }
  const nlohmann::ordered_json& schema = *node;
  if (!schema.is_object() && !schema.is_boolean()) {
    refuse(param, str("'", param, "' must be a JSON schema (an object), got ", schema.type_name()),
           "invalid_type");
  }
  try {
    return json_schema_grammar(schema);
  } catch (const SchemaError& e) {
    refuse(param, str("'", param, "': ", e.what()), e.unsupported() ? "unsupported_value" : "invalid_value");
  }
}

std::shared_ptr<const Grammar> response_format(const json& v, std::string_view raw_body) {
  if (!v.is_object()) refuse("response_format", "'response_format' must be an object", "invalid_type");
  auto type = v.find("type");
  if (type == v.end() || !type->is_string()) {
    refuse("response_format.type",
           "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"",
           type == v.end() ? "missing_field" : "invalid_type");
  }
  if (*type == "text" || *type == "json_object") {
    only_keys(v, "response_format", {"type"});
    return *type == "text" ? nullptr : json_object_grammar();
  }
  if (*type != "json_schema") {
    refuse("response_format.type",
           str("'response_format.type' is ", type->dump(),
               ", expected \"text\", \"json_object\" or \"json_schema\""),
           "invalid_value");
  }
  only_keys(v, "response_format", {"type", "json_schema"});
  auto js = v.find("json_schema");
  if (js == v.end() || !js->is_object()) {
    refuse("response_format.json_schema", "'response_format.json_schema' must be an object with a 'schema'",
           js == v.end() ? "missing_field" : "invalid_type");
  }
  // strict only asks the server to follow the schema exactly, which constrained decoding always does.
  only_keys(*js, "response_format.json_schema", {"name", "description", "schema", "strict"});
  for (const char* key : {"name", "description"}) {
    if (auto it = js->find(key); it != js->end() && !it->is_string()) {
      refuse(str("response_format.json_schema.", key),
             str("'response_format.json_schema.", key, "' must be a string"), "invalid_type");
    }
  }
  if (auto it = js->find("strict"); it != js->end() && !it->is_boolean() && !it->is_null()) {
    refuse("response_format.json_schema.strict", "'response_format.json_schema.strict' must be a boolean",
           "invalid_type");
  }
  auto schema = js->find("schema");
  if (schema == js->end()) {
    refuse("response_format.json_schema.schema", "'response_format.json_schema.schema' is required",
           "missing_field");
  }
  return compile(raw_body, {"response_format", "json_schema", "schema"},
                 "response_format.json_schema.schema");
}

}  // namespace

void refuse_beside_grammar(const json& body, const char* what) {
  // A ban is -infinity: banning every token the grammar allows next would leave nothing to sample
  // (finite biases only reweigh the allowed tokens).
  if (auto it = body.find("logit_bias"); it != body.end() && it->is_object()) {
    for (const auto& [id, bias] : it->items()) {
      if (bias.is_number() && bias.get<double>() <= SamplerParams::kBan) {
        refuse("logit_bias",
               str("'logit_bias' of token ", id.substr(0, 16), " bans it (-100), which cannot be ",
                   "combined with ", what, "; use a bias above -100"),
               "unsupported_value");
      }
    }
  }
  // Under a grammar the only token allowed after a complete value is end-of-generation, so
  // generating through it would repeat that token up to max_tokens.
  if (auto it = body.find("ignore_eos"); it != body.end() && *it == true) {
    refuse("ignore_eos", str("'ignore_eos' cannot be combined with ", what), "unsupported_value");
  }
}

std::shared_ptr<const Grammar> parse_response_format(const json& body, std::string_view raw_body) {
  if (auto it = body.find("grammar"); it != body.end() && !it->is_null()) {
    refuse(
        "grammar",
        "'grammar' (GBNF) is not supported: use response_format {\"type\": \"json_schema\"} or 'json_schema'",
        "unsupported_value");
  }
  std::shared_ptr<const Grammar> g;
  if (auto it = body.find("response_format"); it != body.end() && !it->is_null())
    g = response_format(*it, raw_body);
  if (auto it = body.find("json_schema"); it != body.end() && !it->is_null()) {
    if (g)
      refuse("json_schema", "'json_schema' and a JSON 'response_format' are given: send one",
             "invalid_value");
    g = compile(raw_body, {"json_schema"}, "json_schema");
  }
  if (g) refuse_beside_grammar(body, "a JSON response_format or json_schema");
  return g;
}

}  // namespace qwen::server
