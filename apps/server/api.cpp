#include "api.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include "response_format.h"
#include "sampling/json_schema.h"
#include "sampling/tool_grammar.h"
#include "util/check.h"

namespace qwen::server {

using json = nlohmann::json;

ApiError::ApiError(int status, std::string message, std::string code, std::string param, std::string type)
    : std::runtime_error(message),
      status_(status),
      message_(std::move(message)),
      code_(std::move(code)),
      param_(std::move(param)),
      type_(std::move(type)) {}

json ApiError::to_json() const {
  json err = {{"message", message_}, {"type", type_}, {"code", code_}};
  err["param"] = param_.empty() ? json(nullptr) : json(param_);
  return json{{"error", err}};
}

namespace {

// Most stop strings one request may carry; each is matched against the tail of the text at
// every token, so the cap bounds that work.
constexpr size_t kMaxStop = 16;
// Longest stop string: the held-back tail is compared against every stop prefix at each token.
constexpr size_t kMaxStopBytes = 1024;

[[noreturn]] void invalid(const std::string& param, const std::string& message,
                          const std::string& code = "invalid_value") {
  throw ApiError(400, message, code, param);
}

// The field, or nullptr when it is absent or JSON null (the OpenAI API treats both as "not set").
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

// A value for an error message. Arrays and objects are only named: printing them is recursive,
// and a client may send them nested arbitrarily deep.
std::string describe(const json& v) {
  if (v.is_structured()) return str(v.type_name(), " of ", v.size(), " elements");
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

[[noreturn]] void wrong_type(const char* key, const char* expected, const json& v) {
  invalid(key, str("'", key, "' must be ", expected, ", got ", v.type_name()), "invalid_type");
}

std::optional<double> number(const json& body, const char* key, double lo, double hi, bool lo_open = false) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo)) {
    invalid(key, str("'", key, "' is ", v->dump(), ", expected a number in ", lo_open ? "(" : "[", lo, ", ",
                     hi, "]"));
  }
  return x;
}

std::optional<int64_t> integer(const json& body, const char* key, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) wrong_type(key, "an integer", *v);
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
    invalid(key, str("'", key, "' is ", v->dump(), ", expected an integer in [", lo, ", ", hi, "]"));
  }
  int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    invalid(key, str("'", key, "' is ", x, ", expected an integer in [", lo, ", ", hi, "]"));
  return x;
}

std::optional<bool> boolean(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

std::optional<std::string> string(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) wrong_type(key, "a string", *v);
  return v->get<std::string>();
}

// Every field a route accepts; any other is refused by name (grammar, the legacy functions /
// function_call, ...): a field that is accepted and then ignored would give a wrong answer without
// a word.
constexpr const char* kCommonFields[] = {"model",
                                         "stream",
                                         "stream_options",
                                         "max_tokens",
                                         "max_completion_tokens",
                                         "stop",
                                         "ignore_eos",
                                         "temperature",
                                         "top_p",
                                         "top_k",
                                         "min_p",
                                         "repeat_penalty",
                                         "repeat_last_n",
                                         "presence_penalty",
                                         "frequency_penalty",
                                         "seed",
                                         "n",
                                         "logit_bias",
                                         "user",
                                         "logprobs",
                                         "response_format",
                                         "json_schema",
                                         "grammar"};  // refused by parse_response_format, with advice
constexpr const char* kChatFields[] = {"messages", "top_logprobs", "tools", "tool_choice",
                                       "parallel_tool_calls"};
constexpr const char* kCompletionFields[] = {"prompt", "echo", "best_of", "suffix"};

void refuse_unknown(const json& body, std::span<const char* const> route_fields) {
  for (const auto& [key, value] : body.items()) {
    auto known = [&](std::span<const char* const> names) {
      return std::any_of(names.begin(), names.end(), [&](const char* n) { return key == n; });
    };
    if (!known(kCommonFields) && !known(route_fields)) {
      invalid(key.substr(0, 64), str("field ", describe(json(key)), " is not supported by this server"),
              "unsupported_value");
    }
  }
}

// logit_bias: {"token id": bias in [-100, 100], ...}.
std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& body, int32_t n_vocab) {
  const json* v = field(body, "logit_bias");
  if (!v) return {};
  if (!v->is_object()) wrong_type("logit_bias", "an object of token id -> bias", *v);
  constexpr size_t kMaxBias = 1024;
  if (v->size() > kMaxBias)
    invalid("logit_bias", str("'logit_bias' has ", v->size(), " entries, at most ", kMaxBias));
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& [key, bias] : v->items()) {
    const bool digits = !key.empty() && key.size() <= 9 && std::all_of(key.begin(), key.end(), ::isdigit);
    const int64_t id = digits ? std::stoll(key) : -1;
    if (id < 0 || id >= n_vocab) {
      invalid("logit_bias",
              str("'logit_bias' key ", describe(json(key)), " is not a token id in [0, ", n_vocab, ")"));
    }
    if (!bias.is_number() || !std::isfinite(bias.get<double>()) || bias.get<double>() < -100 ||
        bias.get<double>() > 100) {
      invalid("logit_bias", str("'logit_bias' of token ", id, " is ", describe(bias),
                                ", expected a number in [-100, 100]"));
    }
    out.emplace_back(int32_t(id), bias.get<float>());
  }
  return out;
}

std::vector<std::string> parse_stop(const json& body) {
  const json* v = field(body, "stop");
  if (!v) return {};
  std::vector<std::string> stop;
  if (v->is_string()) {
    stop.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > kMaxStop) invalid("stop", str("'stop' has ", v->size(), " strings, at most ", kMaxStop));
    for (const json& s : *v) {
      if (!s.is_string()) wrong_type("stop", "a string or an array of strings", s);
      stop.push_back(s.get<std::string>());
    }
  } else {
    wrong_type("stop", "a string or an array of strings", *v);
  }
  for (const std::string& s : stop) {
    if (s.empty()) invalid("stop", "'stop' strings must not be empty");
    if (s.size() > kMaxStopBytes) {
      invalid("stop", str("a 'stop' string has ", s.size(), " bytes, at most ", kMaxStopBytes));
    }
  }
  return stop;
}

// Options shared by both generation routes.
void parse_common(const json& body, GenerationRequest& r, std::span<const char* const> route_fields,
                  int32_t n_vocab, std::string_view raw_body) {
  if (!body.is_object()) {
    throw ApiError(400, str("the request body must be a JSON object, got ", body.type_name()),
                   "invalid_type");
  }
  refuse_unknown(body, route_fields);
  r.params.grammar = parse_response_format(body, raw_body);
  r.n = int(integer(body, "n", 1, kMaxChoices).value_or(1));
  r.user = string(body, "user").value_or("");
  r.model = string(body, "model").value_or("");
  r.stream = boolean(body, "stream").value_or(false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    if (!r.stream) invalid("stream_options", "'stream_options' is only allowed with stream = true");
    r.include_usage = boolean(*so, "include_usage").value_or(false);
  }

  // max_completion_tokens (the newer name) wins when both are given; the context caps either.
  constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
  std::optional<int64_t> max_tokens = integer(body, "max_tokens", 1, kMaxInt);
  if (auto mct = integer(body, "max_completion_tokens", 1, kMaxInt)) max_tokens = mct;
  r.params.max_tokens = max_tokens ? int(*max_tokens) : -1;
  r.params.stop = parse_stop(body);
  // llama.cpp's name: generate through end-of-generation tokens (benchmarks with fixed lengths).
  r.params.ignore_eog = boolean(body, "ignore_eos").value_or(false);

  SamplerParams& s = r.params.sampler;
  s.temperature = float(number(body, "temperature", 0.0, 2.0).value_or(1.0));
  s.top_p = float(number(body, "top_p", 0.0, 1.0, /*lo_open=*/true).value_or(1.0));
  s.top_k = int(integer(body, "top_k", 0, kMaxInt).value_or(0));
  s.min_p = float(number(body, "min_p", 0.0, 1.0).value_or(0.0));
  s.repeat_penalty = float(number(body, "repeat_penalty", 0.0, 100.0, /*lo_open=*/true).value_or(1.0));
  s.penalty_last_n = int(integer(body, "repeat_last_n", -1, kMaxInt).value_or(64));
  s.presence_penalty = float(number(body, "presence_penalty", -2.0, 2.0).value_or(0.0));
  s.frequency_penalty = float(number(body, "frequency_penalty", -2.0, 2.0).value_or(0.0));
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer()) wrong_type("seed", "an integer", *seed);
    s.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : uint64_t(seed->get<int64_t>());
    r.seeded = true;
  }
  s.logit_bias = parse_logit_bias(body, n_vocab);
}

// Streams carry text only: n > 1 and logprobs are for whole responses.
void refuse_in_stream(const GenerationRequest& r) {
  if (!r.stream) return;
  if (r.n > 1) invalid("n", "'n' > 1 is not supported with stream = true", "unsupported_value");
  if (r.params.logprobs >= 0) {
    invalid("logprobs", "'logprobs' is not supported with stream = true", "unsupported_value");
  }
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts joined.
std::string message_content(const json& content, size_t i) {
  std::string param = str("messages[", i, "].content");
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    invalid(param, str("'", param, "' must be a string or an array of text parts, got ", content.type_name()),
            "invalid_type");
  }
  std::string text;
  for (const json& part : content) {
    const json* type = part.is_object() ? field(part, "type") : nullptr;
    const json* t = part.is_object() ? field(part, "text") : nullptr;
    if (!type || *type != "text" || !t || !t->is_string()) {
      invalid(param,
              str("'", param, "' parts must be {\"type\": \"text\", \"text\": string}, got ", describe(part)),
              "invalid_type");
    }
    text += t->get<std::string>();
  }
  return text;
}

// An array of token ids, each checked against the vocabulary.
std::vector<int32_t> token_ids(const json& v, const char* param, int32_t n_vocab) {
  if (!v.is_array()) wrong_type(param, "an array of token ids", v);
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const json& t = v[i];
    if (!t.is_number_integer()) wrong_type(param, "an array of token ids", t);
    const bool too_big = t.is_number_unsigned() && t.get<uint64_t>() >= uint64_t(n_vocab);
    const int64_t id = too_big ? int64_t(n_vocab) : t.get<int64_t>();
    if (id < 0 || id >= n_vocab) {
      invalid(param,
              str("'", param, "[", i, "]' is ", describe(t), ", outside the vocabulary [0, ", n_vocab, ")"));
    }
    ids.push_back(int32_t(id));
  }
  return ids;
}

// One message as the chat template sees it: role (developer taken as system), content as a
// string (text parts joined; null only for an assistant turn that makes tool calls), and for tool
// calling tool_calls (function.arguments, a JSON string on the wire, as the object templates
// print with tojson, as llama-server does), tool_call_id and name.
nlohmann::ordered_json chat_message(const json& m, size_t i) {
  const std::string param = str("messages[", i, "]");
  if (!m.is_object())
    invalid(param, str("'", param, "' must be an object, got ", m.type_name()), "invalid_type");
  const json* role = field(m, "role");
  if (!role || !role->is_string()) {
    invalid(param + ".role", str("'", param, ".role' must be a string"),
            role ? "invalid_type" : "missing_field");
  }
  std::string r_name = role->get<std::string>();
  if (r_name == "developer") r_name = "system";  // the newer OpenAI name for the system role
  if (r_name != "system" && r_name != "user" && r_name != "assistant" && r_name != "tool") {
    invalid(param + ".role", str("'", param, ".role' is \"", r_name,
                                 "\", expected \"system\", \"user\", \"assistant\" or \"tool\""));
  }
  nlohmann::ordered_json out = {{"role", r_name}};
  const json* content = field(m, "content");
  const json* calls = r_name == "assistant" ? field(m, "tool_calls") : nullptr;
  if (!content && r_name != "assistant") {
    invalid(param + ".content", str("'", param, ".content' is required"), "missing_field");
  }
  out["content"] = content ? nlohmann::ordered_json(message_content(*content, i))
                   : calls ? nlohmann::ordered_json(nullptr)
                           : nlohmann::ordered_json("");
  if (calls) {
    const std::string cp = param + ".tool_calls";
    if (!calls->is_array()) wrong_type(cp.c_str(), "an array", *calls);
    out["tool_calls"] = nlohmann::ordered_json::array();
    for (size_t k = 0; k < calls->size(); ++k) {
      const json& c = (*calls)[k];
      const std::string at = str(cp, "[", k, "]");
      const json* fn = c.is_object() ? field(c, "function") : nullptr;
      const json* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
      const json* args = fn && fn->is_object() ? field(*fn, "arguments") : nullptr;
      if (!name || !name->is_string() || !args || !args->is_string() ||
          (field(c, "type") && *field(c, "type") != "function")) {
        invalid(at,
                str("'", at,
                    "' must be {\"id\", \"type\": \"function\", \"function\": {\"name\": string, "
                    "\"arguments\": JSON string}}"),
                "invalid_type");
      }
      auto parsed = nlohmann::ordered_json::parse(args->get<std::string>(), nullptr, false);
      if (parsed.is_discarded() || !parsed.is_object()) {
        invalid(at + ".function.arguments",
                str("'", at, ".function.arguments' must be a JSON object as a string"));
      }
      nlohmann::ordered_json call = {{"type", "function"},
                                     {"function", {{"name", *name}, {"arguments", std::move(parsed)}}}};
      if (const json* id = field(c, "id")) call["id"] = *id;
      out["tool_calls"].push_back(std::move(call));
    }
  }
  for (const char* key : {"tool_call_id", "name"}) {
    if (const json* v = field(m, key)) {
      if (!v->is_string())
        invalid(param + "." + key, str("'", param, ".", key, "' must be a string"), "invalid_type");
      out[key] = *v;
    }
  }
  return out;
}

// tool_choice as an object: {"type": "function", "function": {"name": string}}; returns the name.
std::string named_tool_choice(const json& choice) {
  const json* fn = field(choice, "function");
  const json* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
  if (!field(choice, "type") || *field(choice, "type") != "function" || !name || !name->is_string()) {
    invalid("tool_choice",
            "'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": string}}",
            "invalid_type");
  }
  return name->get<std::string>();
}

// tools: function tools, rendered by the model's template in the order the client wrote them
// (their JSON is printed with tojson, so the key order is taken from the raw body). tool_choice
// "none" leaves them out; "auto" (the default) renders them and parses <tool_call> blocks out of
// replies; "required" and a named function also constrain the reply to tool-call blocks of the
// allowed tools, arguments valid against their parameters (sampling/tool_grammar.h), one call
// when parallel_tool_calls is false. Under "auto" the count of calls cannot be enforced, so
// parallel_tool_calls false is refused there.
void parse_tools(const json& body, std::string_view raw_body, GenerationRequest& r) {
  const json* tools = field(body, "tools");
  const json* choice = field(body, "tool_choice");
  const std::optional<bool> parallel = boolean(body, "parallel_tool_calls");
  std::optional<std::string> named;  // tool_choice names this function
  if (choice) {
    if (choice->is_object()) {
      named = named_tool_choice(*choice);
    } else if (*choice != "auto" && *choice != "none" && *choice != "required") {
      invalid("tool_choice", str("'tool_choice' is ", describe(*choice),
                                 ", expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                                 "\"function\": {\"name\": string}}"));
    }
    if (!tools && *choice != "none")
      invalid("tool_choice", "'tool_choice' other than \"none\" needs 'tools'");
  }
  if (parallel && !tools) invalid("parallel_tool_calls", "'parallel_tool_calls' needs 'tools'");
  if (!tools) return;
  if (!tools->is_array()) wrong_type("tools", "an array of function tools", *tools);
  for (size_t k = 0; k < tools->size(); ++k) {
    const json& t = (*tools)[k];
    const json* fn = t.is_object() ? field(t, "function") : nullptr;
    const json* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
    if (!t.is_object() || !field(t, "type") || *field(t, "type") != "function" || !name ||
        !name->is_string() || name->get<std::string>().empty()) {
      invalid(str("tools[", k, "]"),
              str("'tools[", k,
                  "]' must be {\"type\": \"function\", \"function\": "
                  "{\"name\": string, ...}}"),
              "invalid_type");
    }
    if (const json* p = field(*fn, "parameters"); p && !p->is_object()) {
      wrong_type(str("tools[", k, "].function.parameters").c_str(), "an object", *p);
    }
  }
  const bool none = choice && *choice == "none";
  const bool enforce = named || (choice && *choice == "required");
  if (parallel == false && !enforce && !none) {
    invalid("parallel_tool_calls",
            "'parallel_tool_calls' false is enforced only with tool_choice \"required\" or a named function "
            "(under \"auto\" the model decides how many calls to write)",
            "unsupported_value");
  }
  if (enforce && tools->empty()) invalid("tool_choice", "'tool_choice' requires a call but 'tools' is empty");
  if (tools->empty() || none) return;
  r.tools = raw_body.empty() ? nlohmann::ordered_json::parse(tools->dump())
                             : nlohmann::ordered_json::parse(raw_body)["tools"];
  r.parse_tool_calls = true;
  if (!enforce) return;
  if (r.params.grammar) {
    invalid("tool_choice",
            "'tool_choice' that requires a call cannot be combined with a JSON response_format",
            "unsupported_value");
  }
  refuse_beside_grammar(body, "a tool_choice that requires a call");
  ToolCallGrammar calls;
  bool found = false;
  std::vector<std::string> names;
  for (size_t k = 0; k < r.tools.size(); ++k) {
    const auto& fn = r.tools[k]["function"];
    const std::string name = fn["name"].get<std::string>();
    // A call names its tool: two tools of one name would leave its arguments' schema ambiguous.
    if (std::find(names.begin(), names.end(), name) != names.end()) {
      invalid(str("tools[", k, "]"),
              str("'tools[", k, "]' repeats the function name ", describe(json(name))));
    }
    names.push_back(name);
    if (named && name != *named) continue;
    found = true;
    const auto params = fn.contains("parameters") ? fn["parameters"] : nlohmann::ordered_json();
    try {
      calls.add_tool(name, params);
    } catch (const SchemaError& e) {
      const std::string param = str("tools[", k, "].function.parameters");
      invalid(param, str("'", param, "': ", e.what()),
              e.unsupported() ? "unsupported_value" : "invalid_value");
    }
  }
  if (!found) {
    invalid("tool_choice",
            str("'tool_choice' names function ", describe(json(*named)), ", which is not in 'tools'"));
  }
  r.params.grammar = calls.finish(parallel.value_or(true));
}

}  // namespace

json parse_body(const std::string& body) {
  try {
    return json::parse(body);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for numbers beyond a double (1e999): both the client's body.
    throw ApiError(400, str("the request body is not valid JSON: ", e.what()), "invalid_json");
  }
}

GenerationRequest parse_chat_request(const json& body, int32_t n_vocab, std::string_view raw_body) {
  GenerationRequest r;
  r.chat = true;
  parse_common(body, r, kChatFields, n_vocab, raw_body);
  // Chat: "logprobs": bool, "top_logprobs": 0..20 alternatives per token (needs logprobs).
  const bool logprobs = boolean(body, "logprobs").value_or(false);
  const auto top = integer(body, "top_logprobs", 0, kMaxTopLogprobs);
  if (top && !logprobs) invalid("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  r.params.logprobs = logprobs ? int(top.value_or(0)) : -1;
  refuse_in_stream(r);
  const json* messages = field(body, "messages");
  if (!messages) invalid("messages", "'messages' is required", "missing_field");
  if (!messages->is_array()) wrong_type("messages", "an array", *messages);
  if (messages->empty()) invalid("messages", "'messages' must not be empty");
  r.messages = nlohmann::ordered_json::array();
  for (size_t i = 0; i < messages->size(); ++i) r.messages.push_back(chat_message((*messages)[i], i));
  parse_tools(body, raw_body, r);
  return r;
}

GenerationRequest parse_completion_request(const json& body, int32_t n_vocab, std::string_view raw_body) {
  GenerationRequest r;
  parse_common(body, r, kCompletionFields, n_vocab, raw_body);
  // Completions: "logprobs": 0..20, the number of alternatives per token (0: the chosen only).
  if (auto lp = integer(body, "logprobs", 0, kMaxTopLogprobs)) r.params.logprobs = int(*lp);
  refuse_in_stream(r);
  if (auto suffix = string(body, "suffix"); suffix && !suffix->empty()) {
    invalid("suffix", "'suffix' is not supported", "unsupported_value");
  }
  if (auto echo = boolean(body, "echo"); echo && *echo) {
    invalid("echo", "'echo' is not supported", "unsupported_value");
  }
  if (const json* v = field(body, "best_of"); v && !(v->is_number_integer() && v->get<int64_t>() == 1)) {
    invalid("best_of", "only best_of = 1 is supported", "unsupported_value");
  }
  const json* prompt = field(body, "prompt");
  if (!prompt) invalid("prompt", "'prompt' is required", "missing_field");
  // The API allows a string, token ids, or a list of either (one completion each); with n = 1 a
  // list must hold exactly one prompt.
  const json* one = prompt;
  if (prompt->is_array() && prompt->size() == 1 && ((*prompt)[0].is_string() || (*prompt)[0].is_array())) {
    one = &(*prompt)[0];
  }
  if (one->is_string()) {
    r.prompt = one->get<std::string>();
  } else if (one->is_array() && !one->empty() && (*one)[0].is_number()) {
    r.prompt_ids = token_ids(*one, "prompt", n_vocab);
  } else {
    invalid(
        "prompt",
        str("'prompt' must be a string or an array of token ids (or a list of exactly one of those), got ",
            describe(*prompt)),
        "invalid_type");
  }
  if (r.prompt.empty() && r.prompt_ids.empty()) invalid("prompt", "'prompt' must not be empty");
  return r;
}

TokenizeRequest parse_tokenize_request(const json& body) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object", "invalid_type");
  TokenizeRequest r;
  auto content = string(body, "content");
  if (!content) invalid("content", "'content' is required", "missing_field");
  r.content = *content;
  r.add_special = boolean(body, "add_special").value_or(false);
  r.parse_special = boolean(body, "parse_special").value_or(true);
  return r;
}

std::vector<int32_t> parse_detokenize_request(const json& body, int32_t n_vocab) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object", "invalid_type");
  const json* tokens = field(body, "tokens");
  if (!tokens) invalid("tokens", "'tokens' is required", "missing_field");
  return token_ids(*tokens, "tokens", n_vocab);
}

}  // namespace qwen::server
