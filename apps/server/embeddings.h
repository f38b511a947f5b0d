// POST /v1/embeddings: the request (OpenAI's fields, each validated or refused by name) and the
// response body. The vectors themselves come from Engine::embed through the scheduler.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qwen::server {

struct EmbeddingRequest {
  std::string model;  // empty: the served model
  std::string user;   // part of the cache scope, as for generations
  // One entry per input: a text (tokenized by the route) or token ids (checked < n_vocab).
  struct Input {
    std::string text;
    std::vector<int32_t> ids;
  };
  std::vector<Input> inputs;
  bool base64 = false;  // encoding_format "base64": little-endian float32 bytes, base64-encoded
};

// Most inputs in one request (OpenAI's limit).
constexpr size_t kMaxEmbeddingInputs = 2048;

// `input` is a string, an array of strings, an array of token ids or an array of those;
// `dimensions`, when given, must equal n_embd (no truncation is implemented); any field but
// input, model, encoding_format, dimensions and user is refused. Throws ApiError (400).
EmbeddingRequest parse_embedding_request(const nlohmann::json& body, int32_t n_vocab, int n_embd);

// {"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}.
// Each vector is L2-normalised here (OpenAI's and llama-server's vectors have length 1).
nlohmann::json embedding_response(std::vector<std::vector<float>> vectors, bool base64,
                                  const std::string& model, int prompt_tokens);

}  // namespace qwen::server
