// Response bodies in the shapes the OpenAI API (and its Python client) expects, and the
// Server-Sent Events framing of streamed chunks.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "runtime/session.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tool_calls.h"

namespace qwen::server {

// Serialises a body. Generated text can hold bytes that are not UTF-8 (a /detokenize of half a
// character); they are written as U+FFFD instead of failing the response.
std::string to_wire(const nlohmann::json& j);

// "stop" (end-of-generation token or a stop string) or "length" (max_tokens or the context).
const char* openai_finish_reason(FinishReason r);

// OpenAI usage, with prompt_tokens_details.cached_tokens: prompt tokens reused from the KV cache.
nlohmann::json usage_json(int prompt_tokens, int completion_tokens, int cached_tokens);

// The `logprobs` of a choice: chat's {"content": [{token, logprob, bytes, top_logprobs}]} and the
// completions API's {tokens, token_logprobs, top_logprobs, text_offset}.
nlohmann::json chat_logprobs(const Tokenizer& tok, const std::vector<TokenLogprobs>& lps);
nlohmann::json text_logprobs(const Tokenizer& tok, const std::vector<TokenLogprobs>& lps);

// Identity shared by every chunk of one response.
struct ResponseId {
  std::string id;     // "chatcmpl-…" or "cmpl-…"
  int64_t created;    // unix seconds
  std::string model;  // the served model id
};
ResponseId make_response_id(bool chat, const std::string& model);

// Whole responses (stream = false), one choice per generation of the request.
struct Choice {
  std::string text;
  std::vector<ToolCall> tool_calls;  // parsed out of the text (chat with tools): finish_reason "tool_calls"
  FinishReason finish = FinishReason::Running;
  nlohmann::json logprobs;  // null unless requested
};
nlohmann::json chat_completion(const ResponseId& rid, const std::vector<Choice>& choices,
                               const nlohmann::json& usage);
nlohmann::json text_completion(const ResponseId& rid, const std::vector<Choice>& choices,
                               const nlohmann::json& usage);

// One streamed chunk. Chat: `role` adds {"role": "assistant"} to the delta, `text` adds content.
// `finish` set ends the choice ("tool_calls" instead of "stop" when `called_tools`); `usage` (null
// for none) rides on that final chunk.
nlohmann::json chat_chunk(const ResponseId& rid, bool role, const std::optional<std::string>& text,
                          std::optional<FinishReason> finish, const nlohmann::json& usage,
                          bool called_tools = false);
// Streamed tool calls, indexed from `first_index`, as OpenAI streams them: per call a delta with
// its index, id, type and function name (arguments ""), then one with the arguments.
std::vector<nlohmann::json> chat_tool_call_chunks(const ResponseId& rid, const std::vector<ToolCall>& calls,
                                                  int first_index);
nlohmann::json text_chunk(const ResponseId& rid, const std::string& text, std::optional<FinishReason> finish,
                          const nlohmann::json& usage);
// The stream_options.include_usage chunk: no choices, only usage.
nlohmann::json usage_chunk(const ResponseId& rid, bool chat, const nlohmann::json& usage);

// SSE framing: "data: <json>\n\n", the terminating "data: [DONE]\n\n", and a comment line that
// clients ignore (sent while a request waits, so a vanished client is noticed).
std::string sse_data(const nlohmann::json& j);
std::string sse_done();
std::string sse_comment(const std::string& text);

}  // namespace qwen::server
