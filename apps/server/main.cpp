// qwen-server: an OpenAI-compatible HTTP server over one loaded model with N parallel slots.
//
//   qwen-server -m MODEL [--host 127.0.0.1] [--port 8080] [--device auto|cpu|cuda] [-c CTX]
//               [--parallel N] [--api-key KEY] [--chat-template NAME]
//
// Threads: the HTTP front's I/O thread reads requests and its workers run the handlers (http.h);
// one scheduler thread owns the engine; the main thread waits for SIGINT / SIGTERM and then stops
// them in order.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include "backend/backend.h"
#include "gguf/ggml_types.h"
#include "http.h"
#include "metrics.h"
#include "model/config.h"
#include "routes.h"
#include "runtime/kv_cache.h"
#include "runtime/session.h"
#include "scheduler.h"
#include "util/check.h"

namespace {

struct Options {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string device = "auto";
  int n_ctx = 0;
  int parallel = 4;
  int threads = 0;
  int batch = 512;
  int prefill_chunk = 0;
  int http_threads = 0;
  int max_connections = 512;
  int request_timeout = 30;
  double shutdown_grace = 0;
  std::vector<std::string> cors_origins;
  std::vector<std::string> api_keys;
  std::string chat_template;
  std::string alias;
  std::string kv_type = "auto", ctk, ctv;  // --kv-type, -ctk, -ctv
  qwen::CtxOverflow ctx_overflow = qwen::CtxOverflow::Refuse;
  bool exact = false;
  bool embeddings = false;
  std::string pooling;  // empty: the GGUF's <arch>.pooling_type
};

// The pooling /v1/embeddings uses, as llama-server picks it: --pooling, else the GGUF's
// <arch>.pooling_type. Without either (a generative model) embeddings are off unless asked for:
// --embeddings then needs --pooling, since no pooling of a causal model is the obvious one.
std::optional<qwen::Pooling> embedding_pooling(const Options& o, const qwen::ModelConfig& c) {
  using qwen::Pooling;
  if (!o.pooling.empty()) {
    return o.pooling == "mean" ? Pooling::Mean : o.pooling == "cls" ? Pooling::Cls : Pooling::Last;
  }
  if (c.pooling == Pooling::Mean || c.pooling == Pooling::Cls || c.pooling == Pooling::Last) return c.pooling;
  QWEN_CHECK(!o.embeddings, "--embeddings: ", o.model, " has ", c.arch_name, ".pooling_type ",
             qwen::pooling_name(c.pooling),
             " (absent reads as none), which gives no single vector per input; "
             "pick one with --pooling mean|cls|last");
  return std::nullopt;
}

int serve(const Options& o) {
  using namespace qwen;
  for (const std::string& key : o.api_keys) {
    if (key.empty()) throw Error("--api-key: a key must not be empty (it would match a request without one)");
  }
  EngineOptions eo;
  eo.model_path = o.model;
  eo.device = o.device;
  eo.n_threads = o.threads;
  eo.exact = o.exact;
  eo.n_ctx = o.n_ctx;
  eo.ctx_overflow = o.ctx_overflow;
  eo.n_seq = o.parallel;
  eo.max_batch = o.batch;
  eo.kv_type = kv_type_from_flags(o.kv_type, o.ctk, o.ctv);
  std::unique_ptr<Engine> engine = Engine::load(eo);
  std::fprintf(
      stderr, "qwen-server: loaded %s in %.0f ms: %d slots x %d tokens of context (KV cache %.1f MiB)\n",
      o.model.c_str(), engine->load_ms(), engine->n_seq(), engine->n_ctx(), engine->kv_bytes() / 1048576.0);
  // Prefill scratch, kernels and every decode batch size's graph are set up now, not on the first
  // requests.
  const auto t_warm = std::chrono::steady_clock::now();
  if (const int sizes = engine->warm_up(); sizes > 0)
    std::fprintf(
        stderr, "qwen-server: warmed up prefill and the decode graphs of 1..%d sequences in %.0f ms\n", sizes,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_warm).count());

  server::Metrics metrics;
  server::RouteOptions ro;
  const std::filesystem::path path(o.model);
  ro.model_id = o.alias.empty() ? path.stem().string() : o.alias;
  ro.model_file = path.filename().string();
  ro.api_keys = o.api_keys;
  ro.chat_template = o.chat_template;
  ro.cors_origins = o.cors_origins;
  ro.check_host = server::is_loopback(o.host);
  ro.pooling = embedding_pooling(o, engine->config());
  if (ro.pooling) {
    std::fprintf(stderr, "qwen-server: /v1/embeddings: %s pooling of the final normed hidden states\n",
                 qwen::pooling_name(*ro.pooling));
  }
  // A step's forward holds every running stream for as long as its prompt tokens take. On the GPU
  // a forward of max_batch tokens costs a few decode steps; on the CPU its time grows with the
  // tokens (4 layers of width 512: 1.0-1.4 s for 512 tokens, 0.15-0.19 s for 64), while a long
  // prompt fed 64 tokens a step is prefilled only ~14% slower, so the CPU default is 64.
  const int prefill_chunk = o.prefill_chunk > 0 ? o.prefill_chunk
                                                : (engine->backend().kind() == DeviceKind::CUDA
                                                       ? engine->max_batch()
                                                       : std::min(64, engine->max_batch()));
  server::Scheduler scheduler(*engine, metrics, prefill_chunk);
  server::Routes routes(*engine, scheduler, metrics, ro);

  // Every waiting request holds a worker thread, so there must be more than the slots plus the
  // queue a client is likely to build, or /health and /metrics would wait behind generations.
  server::HttpLimits limits;
  limits.workers = o.http_threads > 0 ? o.http_threads : std::max(64, 4 * o.parallel + 16);
  limits.max_connections = o.max_connections;
  limits.request_timeout = std::chrono::seconds(o.request_timeout);
  server::HttpServer http(limits);
  routes.install(http);

  const int port = http.bind_listen(o.host, o.port);
  if (!ro.check_host && o.api_keys.empty()) {
    std::fprintf(stderr,
                 "qwen-server: warning: listening on %s, beyond this machine, without --api-key: anyone "
                 "who can reach the port can use the model\n",
                 o.host.c_str());
  }
  std::fprintf(stderr, "qwen-server: listening on http://%s:%d (model id '%s', %d HTTP threads)\n",
               o.host.c_str(), port, ro.model_id.c_str(), limits.workers);

  std::thread listener([&http] {
    try {
      http.serve();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "qwen-server: error: the HTTP server failed: %s\n", e.what());
    }
    // The listener ended on its own (not through stop_serving()): wake the main thread to exit.
    kill(getpid(), SIGTERM);
  });
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  int sig = 0;
  sigwait(&set, &sig);
  std::fprintf(stderr, "qwen-server: signal %d, shutting down\n", sig);
  // Jobs end first (their clients get 503 or a final error event), so no handler thread is left
  // waiting on a generation when the HTTP pool is joined.
  scheduler.shutdown();
  routes.wait_streams_closed(std::chrono::seconds(2));
  if (o.shutdown_grace > 0) {
    // Still listening, /health and every new request answer 503, so a load balancer sees the
    // server leave before its port closes; a second signal ends the wait.
    std::fprintf(stderr,
                 "qwen-server: answering 503 for %.1f s before closing (a second signal closes now)\n",
                 o.shutdown_grace);
    const double whole = std::floor(o.shutdown_grace);
    const timespec wait{time_t(whole), long((o.shutdown_grace - whole) * 1e9)};
    sigtimedwait(&set, nullptr, &wait);
  }
  http.stop_serving();
  listener.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A client that hangs up mid-response must cost a failed write, not the process.
  signal(SIGPIPE, SIG_IGN);
  // SIGINT / SIGTERM are taken by sigwait() in main; every thread started later inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  Options o;
  CLI::App app{"qwen-server: OpenAI-compatible HTTP server (chat and text completions, streaming)"};
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.add_option("-m,--model", o.model, "GGUF model file")->required();
  app.add_option("--host", o.host, "address to bind (loopback by default)");
  app.add_option("--port", o.port, "TCP port; 0 picks a free one (printed on stderr)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--device", o.device, "auto, cpu or cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("-c,--ctx-size", o.n_ctx, "context tokens per slot (0: the model's trained context)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--ctx-overflow", o.ctx_overflow,
                 "a context beyond the model's trained one: refuse (error) or warn and run")
      ->transform(CLI::CheckedTransformer(std::map<std::string, qwen::CtxOverflow>{
          {"refuse", qwen::CtxOverflow::Refuse}, {"warn", qwen::CtxOverflow::Warn}}))
      ->default_str("refuse");
  app.add_option("--parallel", o.parallel, "parallel slots decoded together")->check(CLI::Range(1, 256));
  app.add_option("-t,--threads", o.threads, "CPU backend threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--exact", o.exact,
               "the oracle arithmetic (slower): on the CPU fp32 from dequantized weights instead of 8-bit "
               "activations; on CUDA activations in two fp16 halves and fp32 attention instead of one fp16 "
               "pass and tensor-core attention");
  app.add_option("-b,--batch-size", o.batch, "most tokens in one forward (longer prompts are chunked)")
      ->check(CLI::Range(1, 65536));
  app.add_option("--prefill-chunk", o.prefill_chunk,
                 "most prompt tokens one step feeds, all requests together, beside the running streams' "
                 "tokens; longer prompts are spread over several steps (0: --batch-size on cuda, 64 on cpu)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--http-threads", o.http_threads, "HTTP worker threads (0: max(64, 4 * parallel + 16))")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-connections", o.max_connections,
                 "open connections at most; one more is answered 503 and closed")
      ->check(CLI::Range(1, 65536));
  app.add_option("--request-timeout", o.request_timeout,
                 "seconds a request (head and body) may take to arrive, from its first byte")
      ->check(CLI::Range(1, 3600));
  app.add_option("--shutdown-grace", o.shutdown_grace,
                 "seconds to keep the port open after SIGINT / SIGTERM, answering 503 (/health included) "
                 "so load balancers take the server out first; a second signal closes at once")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--cors-origin", o.cors_origins,
                 "allow browser requests from this origin (repeatable; '*': any); none by default")
      ->take_all();
  app.add_option("--api-key", o.api_keys,
                 "require 'Authorization: Bearer KEY' on all routes but /health (repeatable: several keys, "
                 "whose cached prompts are kept apart)")
      ->take_all();
  app.add_option("--chat-template", o.chat_template,
                 "a built-in chat template instead of the GGUF's own: chatml, qwen2, qwen2.5, qwen3, llama3, "
                 "llama3.1, llama3.2, gemma");
  app.add_option("--kv-type", o.kv_type,
                 "KV cache type: auto (f16 on cuda, f32 on cpu), f32, f16, bf16 or q8_0");
  app.add_option("--cache-type-k", o.ctk, "(-ctk) KV cache type, as llama.cpp; K and V share it");
  app.add_option("--cache-type-v", o.ctv, "(-ctv) see -ctk");
  app.add_flag("--embeddings", o.embeddings,
               "serve /v1/embeddings even when the GGUF names no pooling (then --pooling is needed); a GGUF "
               "with <arch>.pooling_type mean, cls or last serves it without this flag");
  app.add_option("--pooling", o.pooling, "pooling for /v1/embeddings (default: the GGUF's pooling_type)")
      ->check(CLI::IsMember({"mean", "cls", "last"}));
  app.add_option("-a,--alias", o.alias, "model id reported by /v1/models (default: the file name stem)");
  // llama.cpp's -ctk / -ctv, spelled with one dash, become --cache-type-k / --cache-type-v.
  std::vector<std::string> args = qwen::kv_flag_spellings({argv, argv + argc});
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  CLI11_PARSE(app, int(arg_ptrs.size()), arg_ptrs.data());

  try {
    return serve(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-server: error: %s\n", e.what());
    return 1;
  }
}
