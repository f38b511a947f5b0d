// Constrained decoding requests: OpenAI's response_format (json_object, json_schema) and
// llama-server's top-level json_schema, compiled into the grammar that masks every sampling step
// (sampling/json_schema.h). llama.cpp's GBNF `grammar` field is refused with a pointer to these.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>

#include "sampling/grammar.h"

namespace qwen::server {

// The grammar a request asks for, or null (no field, or response_format {"type": "text"}).
// Throws ApiError 400 naming the field, and for a schema keyword the keyword and its location.
// A schema is taken from raw_body (the text `body` was parsed from) parsed again keeping key
// order, so generated objects list their properties in the schema's order.
std::shared_ptr<const Grammar> parse_response_format(const nlohmann::json& body, std::string_view raw_body);

// Refuses the fields a grammar cannot honour (a logit_bias ban, ignore_eos), naming `what` asked
// for the grammar.
void refuse_beside_grammar(const nlohmann::json& body, const char* what);

}  // namespace qwen::server
