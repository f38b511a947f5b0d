#include "embeddings.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "api.h"
#include "util/check.h"

namespace qwen::server {

using json = nlohmann::json;

namespace {

[[noreturn]] void invalid(const std::string& param, const std::string& message,
                          const std::string& code = "invalid_value") {
  throw ApiError(400, message, code, param);
}

std::vector<int32_t> ids_of(const json& v, const std::string& param, int32_t n_vocab) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < v.size(); ++i) {
    const json& t = v[i];
    if (!t.is_number_integer()) invalid(param, str("'", param, "' must hold token ids only"), "invalid_type");
    // Read as double first: an unsigned value beyond int64 must not wrap into range.
    const double id = t.get<double>();
    if (id < 0 || id >= n_vocab) {
      invalid(param,
              str("'", param, "[", i, "]' is ", t.dump(), ", outside the vocabulary [0, ", n_vocab, ")"));
    }
    ids.push_back(int32_t(id));
  }
  if (ids.empty()) invalid(param, str("'", param, "' must not be empty"));
  return ids;
}

EmbeddingRequest::Input one_input(const json& v, const std::string& param, int32_t n_vocab) {
  EmbeddingRequest::Input in;
  if (v.is_string()) {
    in.text = v.get<std::string>();
    if (in.text.empty()) invalid(param, str("'", param, "' must not be an empty string"));
  } else if (v.is_array()) {
    in.ids = ids_of(v, param, n_vocab);
  } else {
    invalid(param, str("'", param, "' must be a string or an array of token ids, got ", v.type_name()),
            "invalid_type");
  }
  return in;
}

std::string base64(const unsigned char* p, size_t n) {
  static const char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (size_t i = 0; i < n; i += 3) {
    const uint32_t b =
        uint32_t(p[i]) << 16 | (i + 1 < n ? uint32_t(p[i + 1]) << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out += kDigits[b >> 18 & 63];
    out += kDigits[b >> 12 & 63];
    out += i + 1 < n ? kDigits[b >> 6 & 63] : '=';
    out += i + 2 < n ? kDigits[b & 63] : '=';
  }
  return out;
}

}  // namespace

EmbeddingRequest parse_embedding_request(const json& body, int32_t n_vocab, int n_embd) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object", "invalid_type");
  static const char* const kFields[] = {"input", "model", "encoding_format", "dimensions", "user"};
  for (const auto& [key, value] : body.items()) {
    if (std::none_of(std::begin(kFields), std::end(kFields),
                     [&, &key = key](const char* f) { return key == f; }))
      invalid(key.substr(0, 64), str("field '", key.substr(0, 64), "' is not supported by /v1/embeddings"),
              "unsupported_value");
  }
  EmbeddingRequest r;
  auto text_field = [&](const char* key) -> std::string {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return {};
    if (!it->is_string())
      invalid(key, str("'", key, "' must be a string, got ", it->type_name()), "invalid_type");
    return it->get<std::string>();
  };
  r.model = text_field("model");
  r.user = text_field("user");
  const std::string format = text_field("encoding_format");
  if (!format.empty() && format != "float" && format != "base64") {
    invalid("encoding_format",
            str("'encoding_format' is '", format.substr(0, 64), "', expected float or base64"));
  }
  r.base64 = format == "base64";
  if (auto it = body.find("dimensions"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer()) invalid("dimensions", "'dimensions' must be an integer", "invalid_type");
    if (it->get<double>() != double(n_embd)) {
      invalid("dimensions",
              str("'dimensions' is ", it->dump(), ", but this model's embeddings have ", n_embd,
                  " (shortening them is not supported)"),
              "unsupported_value");
    }
  }
  auto it = body.find("input");
  if (it == body.end() || it->is_null()) invalid("input", "'input' is required", "missing_field");
  const json& input = *it;
  // An array of numbers is one input of token ids; any other array is a list of inputs.
  if (input.is_string() || (input.is_array() && !input.empty() && input[0].is_number())) {
    r.inputs.push_back(one_input(input, "input", n_vocab));
  } else if (input.is_array()) {
    if (input.empty()) invalid("input", "'input' must not be empty");
    if (input.size() > kMaxEmbeddingInputs) {
      invalid("input",
              str("'input' has ", input.size(), " entries, at most ", kMaxEmbeddingInputs, " are allowed"));
    }
    for (size_t i = 0; i < input.size(); ++i)
      r.inputs.push_back(one_input(input[i], str("input[", i, "]"), n_vocab));
  } else {
    invalid("input",
            str("'input' must be a string, an array of strings or of token ids, got ", input.type_name()),
            "invalid_type");
  }
  return r;
}

json embedding_response(std::vector<std::vector<float>> vectors, bool base64_format, const std::string& model,
                        int prompt_tokens) {
  json data = json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    std::vector<float>& v = vectors[i];
    double norm = 0.0;
    for (float x : v) norm += double(x) * x;
    norm = std::sqrt(norm);
    // A zero vector stays zero rather than becoming NaN (llama-server does the same).
    if (norm > 0) {
      for (float& x : v) x = float(x / norm);
    }
    json e = {{"object", "embedding"}, {"index", i}};
    if (base64_format) {
      static_assert(std::endian::native == std::endian::little,
                    "base64 embeddings are little-endian float32");
      e["embedding"] = base64(reinterpret_cast<const unsigned char*>(v.data()), v.size() * sizeof(float));
    } else {
      e["embedding"] = v;
    }
    data.push_back(std::move(e));
  }
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

}  // namespace qwen::server
