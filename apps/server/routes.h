// The HTTP routes of qwen-server on a cpp-httplib server: OpenAI-compatible generation
// (/v1/chat/completions, /v1/completions, /v1/models), /health, /metrics, /tokenize,
// /detokenize, API-key checking and OpenAI-shaped errors for every failure.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api.h"
#include "metrics.h"
#include "model/config.h"
#include "runtime/session.h"
#include "scheduler.h"
#include "tokenizer/tokenizer.h"

namespace qwen::server {

// Names that only ever mean this machine: localhost, 127.x.x.x or ::1 (bracketed in a Host
// header), with or without a port. A server bound to one of them checks Host headers.
bool is_loopback(std::string host);

struct RouteOptions {
  std::string model_id;                   // the name /v1/models reports and requests may name
  std::string model_file;                 // the GGUF file name, accepted as a model name too
  std::vector<std::string> api_keys;      // empty: no authentication
  std::string chat_template;              // forced template name; empty: detect from the GGUF
  std::vector<std::string> cors_origins;  // origins browsers may call from ("*": any); empty: none
  bool check_host = true;                 // bound to loopback: Host must name this machine
  std::optional<Pooling> pooling;         // /v1/embeddings' pooling; unset: embeddings are refused
};

// HTTP threads use the engine's tokenizer concurrently with the scheduler thread: Tokenizer's
// const methods are thread-safe (its word cache has its own lock). Everything else of the engine
// is touched only by the scheduler.
class Routes {
 public:
  // Throws qwen::Error when the chat template can be neither detected nor forced.
  Routes(Engine& engine, Scheduler& scheduler, Metrics& metrics, RouteOptions options);
  void install(httplib::Server& http);
  // Waits (at most `timeout`) until every open stream has been closed. Used at shutdown, after the
  // scheduler ended all jobs, so each stream writes its final error event before httplib stops
  // calling stream callbacks.
  void wait_streams_closed(std::chrono::milliseconds timeout) const;

 private:
  void chat_or_completion(const httplib::Request& req, httplib::Response& res, bool chat);
  void embeddings(const httplib::Request& req, httplib::Response& res);
  std::vector<int32_t> prompt_tokens(const GenerationRequest& r);
  std::string chat_prompt(const GenerationRequest& r) const;  // the rendered template (400 if it refuses)
  // Throws context_length_exceeded when `text` has more bytes than the context's tokens can
  // hold, before any tokenization (a 10 MB prompt costs nothing).
  void check_prompt_bytes(const std::string& text, const char* param) const;
  void respond_whole(httplib::Response& res, bool chat, const std::vector<std::shared_ptr<Job>>& jobs,
                     const GenerationRequest& r);
  void respond_stream(httplib::Response& res, bool chat, std::shared_ptr<Job> job,
                      const GenerationRequest& r);
  nlohmann::json model_card() const;
  // The bearer token of the request ("" without one); the scheme is case-insensitive.
  static std::string bearer_token(const httplib::Request& req);
  bool authorized(const httplib::Request& req) const;
  // Host / Origin checks (403) and CORS headers; nullopt when the request may go on.
  std::optional<ApiError> check_origin(const httplib::Request& req, httplib::Response& res) const;

  Engine& engine_;
  Scheduler& scheduler_;
  Metrics& metrics_;
  RouteOptions opt_;
  ChatTemplate template_;
  size_t max_token_bytes_ = 1;  // the longest token's bytes: bounds a prompt's bytes per token
  const int64_t created_;       // server start, reported as the model's creation time
  std::shared_ptr<std::atomic<int>> open_streams_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace qwen::server
