// The HTTP routes of qwen-server on a cpp-httplib server: OpenAI-compatible generation
// (/v1/chat/completions, /v1/completions, /v1/models), /health, /metrics, /tokenize,
// /detokenize, API-key checking and OpenAI-shaped errors for every failure.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "api.h"
#include "metrics.h"
#include "runtime/session.h"
#include "scheduler.h"
#include "tokenizer/tokenizer.h"

namespace qwen::server {

struct RouteOptions {
  std::string model_id;       // the name /v1/models reports and requests may name
  std::string model_file;     // the GGUF file name, accepted as a model name too
  std::string api_key;        // empty: no authentication
  std::string chat_template;  // forced template name; empty: detect from the GGUF
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
  std::vector<int32_t> prompt_tokens(const GenerationRequest& r);
  void respond_whole(httplib::Response& res, bool chat, const std::shared_ptr<Job>& job,
                     const GenerationRequest& r);
  void respond_stream(httplib::Response& res, bool chat, std::shared_ptr<Job> job,
                      const GenerationRequest& r);
  nlohmann::json model_card() const;
  bool authorized(const httplib::Request& req) const;

  Engine& engine_;
  Scheduler& scheduler_;
  Metrics& metrics_;
  RouteOptions opt_;
  ChatTemplate template_;
  const int64_t created_;  // server start, reported as the model's creation time
  std::shared_ptr<std::atomic<int>> open_streams_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace qwen::server
