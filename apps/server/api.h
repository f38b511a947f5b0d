// The server's request types: JSON bodies of the OpenAI-style routes parsed and validated into
// plain structs, and errors in the OpenAI shape {"error": {"message", "type", "param", "code"}}.
// Validation happens here, at the boundary, so everything behind it can trust its input.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

namespace qwen::server {

// An error the client caused (or, with status 5xx, one it should retry), already shaped for the
// wire. `code` is a short machine-readable reason ("invalid_type", "context_length_exceeded", ...).
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string code, std::string param = {},
           std::string type = "invalid_request_error");
  int status() const { return status_; }
  const std::string& code() const { return code_; }
  const std::string& param() const { return param_; }
  const std::string& type() const { return type_; }
  const std::string& message() const { return message_; }  // whole, NUL bytes included
  nlohmann::json to_json() const;

 private:
  int status_;
  std::string message_, code_, param_, type_;
};

// One generation request, from /v1/chat/completions or /v1/completions. Sampling defaults follow
// the OpenAI API (temperature 1, top_p 1, no top-k / min-p) rather than llama.cpp's.
struct GenerationRequest {
  bool chat = false;
  std::string model;                  // empty: the served model
  nlohmann::ordered_json messages;    // chat only: validated messages as the template reads them
  nlohmann::ordered_json tools;       // chat: function tools for the template (null: none)
  bool parse_tool_calls = false;      // tools given, tool_choice not "none": replies yield tool_calls
  std::string prompt;                 // completions: prompt text, or
  std::vector<int32_t> prompt_ids;    // completions: the prompt as token ids (checked < n_vocab)
  GenerateParams params;              // max_tokens (< 0: until eog / stop / context full), sampler, stop
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: an extra usage chunk before [DONE]
  bool seeded = false;         // "seed" given; otherwise the scheduler draws one
  int n = 1;                   // choices; each samples with its own seed (seed + index when seeded)
  std::string user;            // OpenAI's end-user id: part of the prompt cache's scope
};

// Most choices one request may ask for (n) and most top logprobs per token.
constexpr int kMaxChoices = 16;
constexpr int kMaxTopLogprobs = 20;

// Parse a body; throw ApiError (400) naming the field and the bad value. A field the server does
// not implement is refused with code "unsupported_value", never ignored.
nlohmann::json parse_body(const std::string& body);
// raw_body is the body's text: a JSON schema is compiled from it, and `tools` are taken from it, so
// that both keep the client's key order (nlohmann::json sorts object keys; the template prints
// tools as given, and properties are generated in the schema's order).
GenerationRequest parse_chat_request(const nlohmann::json& body, int32_t n_vocab, std::string_view raw_body);
GenerationRequest parse_completion_request(const nlohmann::json& body, int32_t n_vocab,
                                           std::string_view raw_body);

// POST /tokenize {"content": str, "add_special": bool = false, "parse_special": bool = true}
struct TokenizeRequest {
  std::string content;
  bool add_special = false;
  bool parse_special = true;
};
TokenizeRequest parse_tokenize_request(const nlohmann::json& body);

// POST /detokenize {"tokens": [int, ...]}; ids are checked against n_vocab.
std::vector<int32_t> parse_detokenize_request(const nlohmann::json& body, int32_t n_vocab);

}  // namespace qwen::server
