// qwen-server: an OpenAI-compatible HTTP server over one loaded model with N parallel slots.
//
//   qwen-server -m MODEL [--host 127.0.0.1] [--port 8080] [--device auto|cpu|cuda] [-c CTX]
//               [--parallel N] [--api-key KEY] [--chat-template NAME]
//
// Threads: httplib's pool serves connections; one scheduler thread owns the engine; the main
// thread waits for SIGINT / SIGTERM and then stops both in order.
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "backend/backend.h"
#include "gguf/ggml_types.h"
#include "metrics.h"
#include "routes.h"
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
  std::string api_key;
  std::string chat_template;
  std::string alias;
  std::string kv_type = "auto";
  bool exact = false;
};

int serve(const Options& o) {
  using namespace qwen;
  EngineOptions eo;
  eo.model_path = o.model;
  eo.device = o.device;
  eo.n_threads = o.threads;
  eo.cpu_exact = o.exact;
  eo.n_ctx = o.n_ctx;
  eo.n_seq = o.parallel;
  eo.max_batch = o.batch;
  if (o.kv_type != "auto") eo.kv_type = parse_type(o.kv_type);
  std::unique_ptr<Engine> engine = Engine::load(eo);
  QWEN_CHECK(!o.exact || engine->backend().kind() == DeviceKind::CPU,
             "--exact applies to the cpu backend only, not to ", engine->backend().name());
  std::fprintf(stderr, "qwen-server: loaded %s in %.0f ms: %d slots x %d tokens of context\n",
               o.model.c_str(), engine->load_ms(), engine->n_seq(), engine->n_ctx());
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
  ro.api_key = o.api_key;
  ro.chat_template = o.chat_template;
  const int prefill_chunk = o.prefill_chunk > 0 ? o.prefill_chunk : engine->max_batch();
  server::Scheduler scheduler(*engine, metrics, prefill_chunk);
  server::Routes routes(*engine, scheduler, metrics, ro);

  httplib::Server http;
  // Every waiting request holds a pool thread, so the pool must exceed the slots plus the queue
  // a client is likely to build, or /health and /metrics would wait behind generations.
  const size_t pool = o.http_threads > 0 ? size_t(o.http_threads) : size_t(std::max(64, 4 * o.parallel + 16));
  http.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
  http.set_payload_max_length(16u << 20);  // 16 MiB: far beyond any prompt that fits a context
  http.set_read_timeout(30);
  http.set_write_timeout(10);  // also bounds how long a client that stopped reading delays shutdown
  http.set_tcp_nodelay(true);  // tokens leave as they are made
  routes.install(http);

  int port = o.port;
  if (port == 0) {
    port = http.bind_to_any_port(o.host);
    if (port < 0) throw Error(str("cannot bind ", o.host, " to any port"));
  } else if (!http.bind_to_port(o.host, port)) {
    throw Error(str("cannot bind ", o.host, ":", port, " (in use, or a bad --host?)"));
  }
  std::fprintf(stderr, "qwen-server: listening on http://%s:%d (model id '%s', %zu HTTP threads)\n",
               o.host.c_str(), port, ro.model_id.c_str(), pool);

  std::thread listener([&http] {
    http.listen_after_bind();
    // The listener ended on its own (not through stop()): wake the main thread to exit.
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
  http.stop();
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
  app.add_option("-m,--model", o.model, "GGUF model file")->required();
  app.add_option("--host", o.host, "address to bind (loopback by default)");
  app.add_option("--port", o.port, "TCP port; 0 picks a free one (printed on stderr)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--device", o.device, "auto, cpu or cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("-c,--ctx-size", o.n_ctx, "context tokens per slot (0: model default, at most 4096)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--parallel", o.parallel, "parallel slots decoded together")->check(CLI::Range(1, 256));
  app.add_option("-t,--threads", o.threads, "CPU backend threads (0: all cores)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--exact", o.exact,
               "CPU: the fp32 oracle arithmetic instead of 8-bit quantized activations (slower)");
  app.add_option("-b,--batch-size", o.batch, "most tokens in one forward (longer prompts are chunked)")
      ->check(CLI::Range(1, 65536));
  app.add_option("--prefill-chunk", o.prefill_chunk,
                 "longest uncached prompt part fed in one iteration; longer ones are spread over "
                 "several, between decode steps (0: --batch-size)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--http-threads", o.http_threads, "HTTP worker threads (0: max(64, 4 * parallel + 16))")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--api-key", o.api_key, "require 'Authorization: Bearer KEY' (all routes but /health)");
  app.add_option("--chat-template", o.chat_template,
                 "force a chat template: chatml, qwen2, qwen2.5, qwen3, llama3, gemma");
  app.add_option("--kv-type", o.kv_type, "KV cache type (auto: f16 on cuda, f32 on cpu)")
      ->check(CLI::IsMember({"auto", "f32", "f16"}));
  app.add_option("-a,--alias", o.alias, "model id reported by /v1/models (default: the file name stem)");
  CLI11_PARSE(app, argc, argv);

  try {
    return serve(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-server: error: %s\n", e.what());
    return 1;
  }
}
