#include "responses.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>

namespace qwen::server {

using json = nlohmann::json;

std::string to_wire(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

const char* openai_finish_reason(FinishReason r) {
  switch (r) {
    case FinishReason::Length:
    case FinishReason::ContextFull:
      return "length";
    default:
      return "stop";
  }
}

json usage_json(int prompt_tokens, int completion_tokens, int cached_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

namespace {

// A token as the API shows it: its text (bytes that are not UTF-8 become U+FFFD on the wire), its
// raw bytes, and (as llama-server adds) its id.
json token_entry(const Tokenizer& tok, int32_t id, float logprob) {
  const std::string piece = tok.token_bytes(id);
  json bytes = json::array();
  for (unsigned char b : piece) bytes.push_back(int(b));
  return {{"id", id}, {"token", piece}, {"logprob", logprob}, {"bytes", bytes}};
}

}  // namespace

json chat_logprobs(const Tokenizer& tok, const std::vector<TokenLogprobs>& lps) {
  json content = json::array();
  for (const TokenLogprobs& t : lps) {
    json e = token_entry(tok, t.chosen.id, t.chosen.logprob);
    e["top_logprobs"] = json::array();
    for (const TokenLogprob& alt : t.top) e["top_logprobs"].push_back(token_entry(tok, alt.id, alt.logprob));
    content.push_back(std::move(e));
  }
  return {{"content", content}};
}

json text_logprobs(const Tokenizer& tok, const std::vector<TokenLogprobs>& lps) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  size_t offset = 0;
  for (const TokenLogprobs& t : lps) {
    const std::string piece = tok.token_bytes(t.chosen.id);
    tokens.push_back(piece);
    token_logprobs.push_back(t.chosen.logprob);
    json alts = json::object();
    for (const TokenLogprob& alt : t.top) alts[tok.token_bytes(alt.id)] = alt.logprob;
    top.push_back(std::move(alts));
    offsets.push_back(offset);
    offset += piece.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

ResponseId make_response_id(bool chat, const std::string& model) {
  // Unique within a run (counter) and across restarts (random prefix drawn once).
  static const uint64_t prefix = std::random_device{}() | (uint64_t(std::random_device{}()) << 32);
  static std::atomic<uint64_t> counter{0};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%016llx%08llx", chat ? "chatcmpl" : "cmpl", (unsigned long long)prefix,
                (unsigned long long)counter.fetch_add(1));
  int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  return {buf, now, model};
}

namespace {

json envelope(const ResponseId& rid, const char* object) {
  return {{"id", rid.id},
          {"object", object},
          {"created", rid.created},
          {"model", rid.model},
          {"system_fingerprint", "qwen.cu"}};
}

json finish_json(std::optional<FinishReason> finish) {
  return finish ? json(openai_finish_reason(*finish)) : json(nullptr);
}

}  // namespace

json chat_completion(const ResponseId& rid, const std::vector<Choice>& choices, const json& usage) {
  json r = envelope(rid, "chat.completion");
  r["choices"] = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    json message = {{"role", "assistant"}, {"content", c.text}};
    const char* finish = openai_finish_reason(c.finish);
    if (!c.tool_calls.empty()) {
      if (c.text.empty()) message["content"] = nullptr;  // as OpenAI sends a pure tool-call turn
      message["tool_calls"] = json::array();
      for (const ToolCall& call : c.tool_calls) message["tool_calls"].push_back(tool_call_json(call));
      if (finish == std::string_view("stop")) finish = "tool_calls";  // a cut-off reply stays "length"
    }
    r["choices"].push_back(
        {{"index", i}, {"message", message}, {"logprobs", c.logprobs}, {"finish_reason", finish}});
  }
  r["usage"] = usage;
  return r;
}

json text_completion(const ResponseId& rid, const std::vector<Choice>& choices, const json& usage) {
  json r = envelope(rid, "text_completion");
  r["choices"] = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    r["choices"].push_back({{"index", i},
                            {"text", c.text},
                            {"logprobs", c.logprobs},
                            {"finish_reason", openai_finish_reason(c.finish)}});
  }
  r["usage"] = usage;
  return r;
}

json chat_chunk(const ResponseId& rid, bool role, const std::optional<std::string>& text,
                std::optional<FinishReason> finish, const json& usage, bool called_tools) {
  json delta = json::object();
  if (role) delta["role"] = "assistant";
  if (text) delta["content"] = *text;
  json r = envelope(rid, "chat.completion.chunk");
  const bool stopped = finish && openai_finish_reason(*finish) == std::string_view("stop");
  const json reason = called_tools && stopped ? json("tool_calls") : finish_json(finish);
  r["choices"] =
      json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", reason}}});
  if (!usage.is_null()) r["usage"] = usage;
  return r;
}

std::vector<json> chat_tool_call_chunks(const ResponseId& rid, const std::vector<ToolCall>& calls,
                                        int first_index) {
  std::vector<json> out;
  auto chunk = [&](json call) {
    json r = envelope(rid, "chat.completion.chunk");
    r["choices"] = json::array({{{"index", 0},
                                 {"delta", {{"tool_calls", json::array({std::move(call)})}}},
                                 {"logprobs", nullptr},
                                 {"finish_reason", nullptr}}});
    out.push_back(std::move(r));
  };
  for (size_t i = 0; i < calls.size(); ++i) {
    const int index = first_index + int(i);
    ToolCall head = calls[i];
    head.arguments.clear();
    chunk(tool_call_json(head, index));
    chunk({{"index", index}, {"function", {{"arguments", calls[i].arguments}}}});
  }
  return out;
}

json text_chunk(const ResponseId& rid, const std::string& text, std::optional<FinishReason> finish,
                const json& usage) {
  json r = envelope(rid, "text_completion");
  r["choices"] = json::array(
      {{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_json(finish)}}});
  if (!usage.is_null()) r["usage"] = usage;
  return r;
}

json usage_chunk(const ResponseId& rid, bool chat, const json& usage) {
  json r = envelope(rid, chat ? "chat.completion.chunk" : "text_completion");
  r["choices"] = json::array();
  r["usage"] = usage;
  return r;
}

std::string sse_data(const json& j) {
  return "data: " + to_wire(j) + "\n\n";
}
std::string sse_done() {
  return "data: [DONE]\n\n";
}
std::string sse_comment(const std::string& text) {
  return ": " + text + "\n\n";
}

}  // namespace qwen::server
