#include "routes.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <random>
#include <thread>

#include "embeddings.h"
#include "http.h"
#include "responses.h"
#include "util/check.h"

namespace qwen::server {

using json = nlohmann::json;

namespace {

constexpr const char* kJson = "application/json";
// How long a streaming response waits for text before it writes an SSE comment. Writing is the
// only way to learn that the client has gone, so this bounds how long a vanished client's job
// keeps its place in the queue.
constexpr std::chrono::milliseconds kKeepAlive{500};
// How often a non-streaming request checks that its client is still connected.
constexpr std::chrono::milliseconds kDisconnectPoll{100};

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(to_wire(e.to_json()), kJson);
}

// The engine failed on a request it had accepted (never the client's fault).
ApiError server_error(const std::string& message) {
  return ApiError(500, message, "internal_error", {}, "server_error");
}

ApiError job_error(const JobResult& r) {
  if (r.shutting_down) return ApiError(503, r.error, "shutting_down", {}, "server_error");
  return server_error(r.error);
}

// Runs a handler and turns every exception into an OpenAI-shaped error response.
template <class F>
void guarded(httplib::Response& res, F&& f) {
  try {
    f();
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const std::exception& e) {
    send_error(res, server_error(e.what()));
  }
}

uint64_t random_seed() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lk(mu);
  return rng();
}

// The GGUF's own Jinja template (run by the Jinja engine), a built-in one when forced, or ChatML
// when the GGUF has none, as llama-server does.
ChatTemplate choose_template(const Tokenizer& tok, const std::string& forced) {
  if (forced.empty() && tok.chat_template_source().empty()) {
    std::fprintf(stderr,
                 "qwen-server: warning: the model has no tokenizer.chat_template; chat requests use ChatML "
                 "(--chat-template NAME picks another)\n");
    return ChatTemplate::for_tokenizer(tok, "chatml");
  }
  return ChatTemplate::for_tokenizer(tok, forced);
}

}  // namespace

bool is_loopback(std::string host) {
  if (host == "::1") return true;  // an address to bind, unbracketed
  if (host.starts_with("[")) {
    const size_t close = host.find(']');
    return close != std::string::npos && host.substr(0, close + 1) == "[::1]" &&
           (close + 1 == host.size() || host[close + 1] == ':');
  }
  if (const size_t colon = host.find(':'); colon != std::string::npos) host.resize(colon);
  for (char& ch : host) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (host == "localhost") return true;
  int dots = 0;
  for (char ch : host) {
    if (ch == '.')
      ++dots;
    else if (!std::isdigit(static_cast<unsigned char>(ch)))
      return false;
  }
  return host.starts_with("127.") && dots == 3;
}

Routes::Routes(Engine& engine, Scheduler& scheduler, Metrics& metrics, RouteOptions options)
    : engine_(engine),
      scheduler_(scheduler),
      metrics_(metrics),
      opt_(std::move(options)),
      template_(choose_template(engine.tokenizer(), opt_.chat_template)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count()) {
  const Tokenizer& tok = engine.tokenizer();
  for (int32_t id = 0; id < tok.n_vocab(); ++id)
    max_token_bytes_ = std::max(max_token_bytes_, tok.token_bytes(id).size());
}

std::string Routes::bearer_token(const httplib::Request& req) {
  const std::string h = req.get_header_value("Authorization");
  const size_t sp = h.find(' ');
  if (sp == std::string::npos) return {};
  std::string scheme = h.substr(0, sp);
  for (char& ch : scheme) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if (scheme != "bearer") return {};
  const size_t start = h.find_first_not_of(' ', sp);
  return start == std::string::npos ? std::string() : h.substr(start);
}

bool Routes::authorized(const httplib::Request& req) const {
  if (opt_.api_keys.empty()) return true;
  const std::string got = bearer_token(req);
  // Compare every byte of every key whatever the first mismatch, so timing does not reveal a prefix.
  bool ok = false;
  for (const std::string& key : opt_.api_keys) {
    unsigned diff = got.size() == key.size() ? 0u : 1u;
    for (size_t i = 0; i < key.size(); ++i) diff |= unsigned(i < got.size() ? got[i] ^ key[i] : 1);
    ok |= diff == 0;
  }
  return ok;
}

std::optional<ApiError> Routes::check_origin(const httplib::Request& req, httplib::Response& res) const {
  // A page of any web site can make a browser send requests here, and DNS rebinding can give that
  // site's name this machine's address: a loopback server answers only requests for localhost.
  if (opt_.check_host && req.has_header("Host") && !is_loopback(req.get_header_value("Host"))) {
    return ApiError(403,
                    str("Host '", req.get_header_value("Host").substr(0, 80),
                        "' is refused: this server is bound to loopback and answers only requests for "
                        "localhost, 127.0.0.1 or [::1] (DNS rebinding guard)"),
                    "host_not_allowed", {}, "permission_error");
  }
  if (!req.has_header("Origin")) return std::nullopt;  // not sent by a browser page
  const std::string origin = req.get_header_value("Origin");
  const auto& allowed = opt_.cors_origins;
  const bool any = std::find(allowed.begin(), allowed.end(), "*") != allowed.end();
  if (!any && std::find(allowed.begin(), allowed.end(), origin) == allowed.end()) {
    return ApiError(403,
                    str("requests from web pages of origin '", origin.substr(0, 80),
                        "' are refused; start the server with --cors-origin ORIGIN to allow one"),
                    "origin_not_allowed", {}, "permission_error");
  }
  res.set_header("Access-Control-Allow-Origin", any ? "*" : origin);
  res.set_header("Vary", "Origin");
  return std::nullopt;
}

json Routes::model_card() const {
  const Tokenizer& tok = engine_.tokenizer();
  return {{"id", opt_.model_id},
          {"object", "model"},
          {"created", created_},
          {"owned_by", "qwen.cu"},
          {"meta",
           {{"n_ctx", engine_.n_ctx()},
            {"n_slots", engine_.n_seq()},
            {"n_vocab", tok.n_vocab()},
            {"chat_template", template_.name()}}}};
}

void Routes::install(httplib::Server& http) {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    metrics_.requests++;
    if (std::optional<ApiError> refused = check_origin(req, res)) {
      send_error(res, *refused);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method == "OPTIONS") {  // CORS preflight (browsers send it without credentials)
      res.status = 204;
      res.set_header("Allow", "GET, POST, OPTIONS");
      if (req.has_header("Origin")) {
        res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
        res.set_header("Access-Control-Max-Age", "600");
      }
      return httplib::Server::HandlerResponse::Handled;
    }
    // /health stays open so load balancers can probe without the key.
    if (req.path == "/health" || authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                             "invalid_api_key", {}, "authentication_error"));
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors httplib itself raises (no route, malformed HTTP, payload too large) get the same shape.
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = res.status == 404
                              ? str("no route ", req.method, " ", req.path)
                              : str("HTTP error ", res.status, " on ", req.method, " ", req.path);
    send_error(res, ApiError(res.status, message, res.status == 404 ? "not_found" : "http_error"));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      send_error(res, server_error(e.what()));
    } catch (...) {
      send_error(res, server_error("unknown exception"));
    }
  });
  http.set_logger([this](const httplib::Request&, const httplib::Response& res) {
    if (res.status >= 400) metrics_.errors++;
  });

  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    chat_or_completion(req, res, true);
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    chat_or_completion(req, res, false);
  });
  http.Post("/v1/embeddings",
            [this](const httplib::Request& req, httplib::Response& res) { embeddings(req, res); });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(to_wire({{"object", "list"}, {"data", json::array({model_card()})}}), kJson);
  });
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      const std::string name = req.matches[1];
      if (name != opt_.model_id && name != opt_.model_file) {
        throw ApiError(404,
                       str("model '", name, "' does not exist; this server serves '", opt_.model_id, "'"),
                       "model_not_found", "model");
      }
      res.set_content(to_wire(model_card()), kJson);
    });
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    // A load balancer must stop sending requests once the server is shutting down.
    const bool stopping = scheduler_.stopping();
    res.status = stopping ? 503 : 200;
    res.set_content(to_wire({{"status", stopping ? "shutting_down" : "ok"},
                             {"slots_total", scheduler_.n_slots()},
                             {"slots_active", metrics_.active.load()},
                             {"requests_queued", metrics_.queued.load()}}),
                    kJson);
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(scheduler_.n_slots()), "text/plain; version=0.0.4");
  });
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      TokenizeRequest r = parse_tokenize_request(parse_body(req.body));
      std::vector<int32_t> ids = engine_.tokenizer().encode(r.content, r.parse_special, r.add_special);
      res.set_content(to_wire({{"tokens", ids}}), kJson);
    });
  });
  // llama-server's /apply-template: the prompt a chat request renders to, without generating.
  http.Post("/apply-template", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      const GenerationRequest r =
          parse_chat_request(parse_body(req.body), engine_.tokenizer().n_vocab(), req.body);
      res.set_content(to_wire({{"prompt", chat_prompt(r)}}), kJson);
    });
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      std::vector<int32_t> ids =
          parse_detokenize_request(parse_body(req.body), engine_.tokenizer().n_vocab());
      std::string text = engine_.tokenizer().decode(ids);
      res.set_content(to_wire({{"content", text}}), kJson);
    });
  });
}

void Routes::wait_streams_closed(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (open_streams_->load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Routes::check_prompt_bytes(const std::string& text, const char* param) const {
  // No token stands for more than max_token_bytes_ bytes, so a text of more than
  // (n_ctx - 1) * max_token_bytes_ bytes has at least n_ctx tokens: too many, whatever they are.
  const size_t most = size_t(engine_.n_ctx() - 1) * max_token_bytes_;
  if (text.size() <= most) return;
  throw ApiError(
      400,
      str("the prompt has ", text.size(), " bytes, so at least ", text.size() / max_token_bytes_ + 1,
          " tokens (no token is longer than ", max_token_bytes_, " bytes), but the context holds ",
          engine_.n_ctx(), " per request (prompt + completion)"),
      "context_length_exceeded", param);
}

std::string Routes::chat_prompt(const GenerationRequest& r) const {
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  if (!r.tools.is_null()) vars["tools"] = r.tools;
  try {
    return template_.render(r.messages, /*add_generation_prompt=*/true, vars);
  } catch (const Error& e) {
    // The template refused the conversation (e.g. roles out of order): the client's doing.
    throw ApiError(400, str("the chat template rejected the messages: ", e.what()), "invalid_messages",
                   "messages");
  }
}

std::vector<int32_t> Routes::prompt_tokens(const GenerationRequest& r) {
  std::vector<int32_t> ids;
  const size_t max_prompt = size_t(engine_.n_ctx()) - 1;  // one token must be left to generate
  if (r.chat) {
    const std::string text = chat_prompt(r);
    check_prompt_bytes(text, "messages");
    // The rendered template already holds its BOS and control tokens as text. Tokenizing stops
    // once the prompt cannot fit (n_ctx tokens), so a long one costs only what the context holds.
    ids = engine_.tokenizer().encode(text, /*parse_special=*/true, /*add_special=*/false, max_prompt);
  } else if (!r.prompt_ids.empty()) {
    ids = r.prompt_ids;
  } else {
    check_prompt_bytes(r.prompt, "prompt");
    ids = engine_.tokenizer().encode(r.prompt, /*parse_special=*/true, /*add_special=*/true, max_prompt);
  }
  if (ids.empty())
    throw ApiError(400, "the prompt encodes to no tokens", "invalid_value", r.chat ? "messages" : "prompt");
  // At least one generated token must fit after the prompt in the slot's context.
  if (ids.size() > max_prompt) {
    // A text's tokenizing stopped there: the count is a lower bound.
    throw ApiError(400,
                   str("the prompt has ", r.prompt_ids.empty() ? "at least " : "", ids.size(),
                       " tokens but the context holds ", engine_.n_ctx(),
                       " per request (prompt + completion); shorten the prompt or restart with a larger -c"),
                   "context_length_exceeded", r.chat ? "messages" : "prompt");
  }
  return ids;
}

void Routes::chat_or_completion(const httplib::Request& req, httplib::Response& res, bool chat) {
  guarded(res, [&] {
    json body = parse_body(req.body);
    const int32_t n_vocab = engine_.tokenizer().n_vocab();
    GenerationRequest r = chat ? parse_chat_request(body, n_vocab, req.body)
                               : parse_completion_request(body, n_vocab, req.body);
    if (!r.model.empty() && r.model != opt_.model_id && r.model != opt_.model_file) {
      throw ApiError(
          400, str("model '", r.model, "' is not served here; GET /v1/models lists '", opt_.model_id, "'"),
          "model_not_found", "model");
    }
    if (r.model.empty()) r.model = opt_.model_id;
    if (!r.seeded) r.params.sampler.seed = random_seed();
    const std::vector<int32_t> prompt = prompt_tokens(r);
    // Cached prompts are shared only by requests of one API key and one `user` (scheduler.h).
    const std::string scope = str(bearer_token(req), '\n', r.user);
    std::vector<std::shared_ptr<Job>> jobs;
    for (int i = 0; i < r.n; ++i) {
      GenerateParams params = r.params;
      params.sampler.seed += uint64_t(i);  // choices differ; a seeded request stays reproducible
      jobs.push_back(std::make_shared<Job>(prompt, params, scope));
      scheduler_.submit(jobs.back());
    }
    if (r.stream) {
      respond_stream(res, chat, std::move(jobs.front()), r);
    } else {
      respond_whole(res, chat, jobs, r);
    }
  });
}

void Routes::respond_whole(httplib::Response& res, bool chat, const std::vector<std::shared_ptr<Job>>& jobs,
                           const GenerationRequest& r) {
  std::vector<Choice> choices;
  int completion_tokens = 0, cached_tokens = std::numeric_limits<int>::max();
  for (const std::shared_ptr<Job>& job : jobs) {
    Choice c;
    Job::Update u;
    do {
      // Polled: a client that hangs up cancels its generations instead of leaving them to run.
      u = job->wait(kDisconnectPoll);
      c.text += u.text;
      if (!u.done && HttpServer::client_gone()) {
        for (const std::shared_ptr<Job>& j : jobs) j->cancel();
      }
    } while (!u.done);
    if (!u.result.error.empty()) {
      for (const std::shared_ptr<Job>& j : jobs) j->cancel();
      throw job_error(u.result);
    }
    c.finish = u.result.finish;
    if (r.parse_tool_calls) {
      ParsedReply reply = parse_tool_calls(c.text);
      c.text = std::move(reply.content);
      c.tool_calls = std::move(reply.calls);
    }
    if (r.params.logprobs >= 0) {
      // Every sampled token but an end-of-generation one, which adds no text.
      std::vector<TokenLogprobs> lps = u.result.logprobs;
      if (c.finish == FinishReason::Eog && !lps.empty()) lps.pop_back();
      c.logprobs = chat ? chat_logprobs(engine_.tokenizer(), lps) : text_logprobs(engine_.tokenizer(), lps);
    }
    completion_tokens += u.result.completion_tokens;
    // The prompt counts once; of its n evaluations, the part every one of them reused.
    cached_tokens = std::min(cached_tokens, u.result.cached_tokens);
    choices.push_back(std::move(c));
  }
  ResponseId rid = make_response_id(chat, r.model);
  json usage = usage_json(int(jobs.front()->prompt().size()), completion_tokens, cached_tokens);
  json body = chat ? chat_completion(rid, choices, usage) : text_completion(rid, choices, usage);
  res.set_content(to_wire(body), kJson);
}

void Routes::embeddings(const httplib::Request& req, httplib::Response& res) {
  guarded(res, [&] {
    if (!opt_.pooling) {
      throw ApiError(
          501,
          "this server does not serve embeddings: the model names no pooling (<arch>.pooling_type); "
          "start it with --embeddings --pooling mean|cls|last",
          "not_supported", {}, "not_supported_error");
    }
    const Tokenizer& tok = engine_.tokenizer();
    EmbeddingRequest r =
        parse_embedding_request(parse_body(req.body), tok.n_vocab(), engine_.config().n_embd);
    if (!r.model.empty() && r.model != opt_.model_id && r.model != opt_.model_file) {
      throw ApiError(
          400, str("model '", r.model, "' is not served here; GET /v1/models lists '", opt_.model_id, "'"),
          "model_not_found", "model");
    }
    const std::string scope = str(bearer_token(req), '\n', r.user);
    const size_t n_ctx = size_t(engine_.n_ctx());
    std::vector<std::shared_ptr<Job>> jobs;
    int prompt_tokens = 0;
    for (size_t i = 0; i < r.inputs.size(); ++i) {
      const std::string param = r.inputs.size() == 1 ? "input" : str("input[", i, "]");
      std::vector<int32_t> ids = std::move(r.inputs[i].ids);
      if (ids.empty()) {
        // More bytes than n_ctx of the longest tokens cannot fit (see check_prompt_bytes).
        const std::string& text = r.inputs[i].text;
        if (text.size() > n_ctx * max_token_bytes_) {
          throw ApiError(400,
                         str("'", param, "' has ", text.size(), " bytes, so more than the ", n_ctx,
                             " tokens of the context (no token is longer than ", max_token_bytes_, " bytes)"),
                         "context_length_exceeded", param);
        }
        ids = tok.encode(text, /*parse_special=*/true, /*add_special=*/true, n_ctx);  // stops past n_ctx
      }
      if (ids.empty()) throw ApiError(400, str("'", param, "' encodes to no tokens"), "invalid_value", param);
      if (ids.size() > n_ctx) {
        throw ApiError(400,
                       str("'", param, "' has ", r.inputs[i].text.empty() ? "" : "at least ", ids.size(),
                           " tokens but the context holds ", n_ctx),
                       "context_length_exceeded", param);
      }
      prompt_tokens += int(ids.size());
      jobs.push_back(std::make_shared<Job>(std::move(ids), GenerateParams{}, scope, opt_.pooling));
    }
    for (const std::shared_ptr<Job>& job : jobs) scheduler_.submit(job);
    std::vector<std::vector<float>> vectors;
    for (const std::shared_ptr<Job>& job : jobs) {
      Job::Update u;
      do {  // polled, so that a client that hangs up cancels the inputs not yet evaluated
        u = job->wait(kDisconnectPoll);
        if (!u.done && HttpServer::client_gone()) {
          for (const std::shared_ptr<Job>& j : jobs) j->cancel();
        }
      } while (!u.done);
      if (!u.result.error.empty() || u.result.finish == FinishReason::Cancelled) {
        for (const std::shared_ptr<Job>& j : jobs) j->cancel();
        if (u.result.error.empty()) throw ApiError(499, "the client closed the connection", "cancelled");
        throw job_error(u.result);
      }
      vectors.push_back(std::move(u.result.embedding));
    }
    res.set_content(to_wire(embedding_response(std::move(vectors), r.base64,
                                               r.model.empty() ? opt_.model_id : r.model, prompt_tokens)),
                    kJson);
  });
}

namespace {

// Owned by the streaming callback: when httplib drops the callback (stream finished, write
// failed, connection closed) the job is cancelled, which frees its slot if it still runs.
struct StreamState {
  std::shared_ptr<Job> job;
  std::shared_ptr<std::atomic<int>> open_streams;  // Routes' count, decremented here
  ResponseId rid;
  bool chat = false;
  bool include_usage = false;
  bool role_sent = false;
  std::optional<ToolCallParser> tools;  // chat with tools: text goes through it
  ~StreamState() {
    job->cancel();
    open_streams->fetch_sub(1);
  }
};

}  // namespace

void Routes::respond_stream(httplib::Response& res, bool chat, std::shared_ptr<Job> job,
                            const GenerationRequest& r) {
  auto st = std::make_shared<StreamState>();
  st->job = std::move(job);
  open_streams_->fetch_add(1);
  st->open_streams = open_streams_;
  st->rid = make_response_id(chat, r.model);
  st->chat = chat;
  st->include_usage = r.include_usage;
  if (r.parse_tool_calls) st->tools.emplace();
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider("text/event-stream", [st](size_t, httplib::DataSink& sink) {
    if (st->chat && !st->role_sent) {
      // The role chunk goes out at once, before any token: the client sees the stream open.
      st->role_sent = true;
      std::string role = sse_data(chat_chunk(st->rid, /*role=*/true, std::string(), std::nullopt, nullptr));
      if (sink.write(role.data(), role.size())) return true;
      st->job->cancel();
      return false;
    }
    std::string out;
    Job::Update u = st->job->wait(kKeepAlive);
    std::string text = std::move(u.text);
    if (st->tools) {
      // Content is sent once it cannot be part of a <tool_call> block; each call once complete.
      const int before = st->tools->n_calls();
      text = st->tools->push(text);
      if (u.done && u.result.error.empty()) text += st->tools->flush();
      if (std::vector<ToolCall> calls = st->tools->take_calls(); !calls.empty()) {
        if (!text.empty())
          out += sse_data(chat_chunk(st->rid, false, std::exchange(text, {}), std::nullopt, nullptr));
        for (const json& chunk : chat_tool_call_chunks(st->rid, calls, before)) out += sse_data(chunk);
      }
    }
    if (!text.empty()) {
      out += sse_data(st->chat ? chat_chunk(st->rid, false, text, std::nullopt, nullptr)
                               : text_chunk(st->rid, text, std::nullopt, nullptr));
    }
    if (u.done) {
      const JobResult& res = u.result;
      if (!res.error.empty()) {
        // Headers are gone already, so the error travels as an event, as OpenAI's API does.
        out += sse_data(job_error(res).to_json());
      } else {
        json usage = usage_json(res.prompt_tokens, res.completion_tokens, res.cached_tokens);
        const bool called = st->tools && st->tools->n_calls() > 0;
        out += sse_data(st->chat ? chat_chunk(st->rid, false, std::nullopt, res.finish, usage, called)
                                 : text_chunk(st->rid, "", res.finish, usage));
        if (st->include_usage) out += sse_data(usage_chunk(st->rid, st->chat, usage));
      }
      out += sse_done();
    }
    if (out.empty()) out = sse_comment("waiting");
    if (!sink.write(out.data(), out.size())) {
      st->job->cancel();
      return false;
    }
    if (u.done) sink.done();
    return true;
  });
}

}  // namespace qwen::server
