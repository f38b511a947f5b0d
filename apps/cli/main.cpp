// qwen-cli: text generation and chat on a GGUF model. Streams text to stdout; the progress bar,
// timing and errors go to stderr. Flags follow llama.cpp's names where they exist.
#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "model/model.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace {

// QWEN_MODEL, else the default model that scripts/fetch_model.py caches.
std::string default_model_path() {
  if (const char* m = std::getenv("QWEN_MODEL"); m != nullptr && *m != '\0') return m;
  std::filesystem::path cache;
  if (const char* c = std::getenv("QWEN_CACHE"); c != nullptr && *c != '\0') {
    cache = c;
  } else if (const char* home = std::getenv("HOME"); home != nullptr) {
    cache = std::filesystem::path(home) / ".cache" / "qwen.cu";
  }
  const std::filesystem::path p = cache / "models" / "default.gguf";
  QWEN_CHECK(std::filesystem::exists(p),
             "no model given: pass -m MODEL.gguf or set QWEN_MODEL (scripts/run.sh fetches the default "
             "model and runs qwen-cli on it); looked for ",
             p.string());
  return p.string();
}

// A one-line bar on stderr, redrawn only when the percentage changes.
class ProgressBar {
 public:
  void operator()(float frac) {
    const int pct = int(frac * 100.f + 0.5f);
    if (pct == last_) return;
    last_ = pct;
    const int filled = pct * kWidth / 100;
    std::fprintf(stderr, "\rloading [%s%s] %3d%%", std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, ' ').c_str(), pct);
    if (pct >= 100) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  static constexpr int kWidth = 40;
  int last_ = -1;
};

// weight_bytes: every decode step streams all weights once, so bytes x tok/s is the effective
// memory bandwidth of generation (ARCHITECTURE §Rules 7).
void print_timing(const qwen::Completion& c, size_t weight_bytes) {
  const qwen::Timing& t = c.timing;
  std::fprintf(stderr,
               "\n[prompt: %d tokens (%d cached) in %.1f ms, %.1f tok/s | generation: %d tokens in %.1f ms, "
               "%.1f tok/s, %.2f GB/s | finish: %s]\n",
               t.n_prompt, t.n_cached, t.prompt_ms, t.prompt_tok_s(), t.n_gen, t.gen_ms, t.gen_tok_s(),
               double(weight_bytes) * t.gen_tok_s() / 1e9, qwen::finish_reason_name(c.finish));
}

// Ctrl-C in a chat stops the reply being generated; a second Ctrl-C before the next reply starts
// quits.
std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) {
  if (g_interrupted.exchange(true)) std::_Exit(130);
}

bool stream_out(std::string_view piece) {
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
  return !g_interrupted.load();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-cli: generate text or chat with a Qwen / Llama GGUF model"};
  qwen::EngineOptions opts;
  qwen::GenerateParams gen;
  std::string prompt, system_prompt, chat_template;
  bool chat = false, interactive = false;
  int64_t seed = -1;
  app.add_option("-m,--model", opts.model_path,
                 "GGUF model (default: $QWEN_MODEL, else the cached default model)");
  app.add_option("-p,--prompt", prompt, "prompt text (in --chat mode: the first user message)");
  app.add_option("-n,--n-predict", gen.max_tokens, "tokens to generate (-1: until end of generation)")
      ->capture_default_str();
  app.add_option("-c,--ctx-size", opts.n_ctx, "context size in tokens (0: min(model context, 4096))")
      ->capture_default_str();
  app.add_option("-b,--batch-size", opts.max_batch, "most prompt tokens per forward call")
      ->capture_default_str();
  app.add_option("-t,--threads", opts.n_threads, "CPU threads (0: all)")->capture_default_str();
  bool exact = false;
  app.add_flag("--exact", exact,
               "CPU: the fp32 oracle arithmetic instead of 8-bit quantized activations (slower)");
  std::string kv_type = "auto";
  app.add_option("--kv-type", kv_type, "KV cache type (auto: f16 on cuda, f32 on cpu)")
      ->check(CLI::IsMember({"auto", "f32", "f16"}))
      ->capture_default_str();
  app.add_option("--device", opts.device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--temp", gen.sampler.temperature, "temperature (0: greedy)")->capture_default_str();
  app.add_option("--top-k", gen.sampler.top_k, "top-k (0: off)")->capture_default_str();
  app.add_option("--top-p", gen.sampler.top_p, "top-p (1: off)")->capture_default_str();
  app.add_option("--min-p", gen.sampler.min_p, "min-p (0: off)")->capture_default_str();
  app.add_option("--repeat-penalty", gen.sampler.repeat_penalty, "repetition penalty (1: off)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", gen.sampler.penalty_last_n, "tokens the penalties look back (-1: all)")
      ->capture_default_str();
  app.add_option("--presence-penalty", gen.sampler.presence_penalty, "presence penalty")
      ->capture_default_str();
  app.add_option("--frequency-penalty", gen.sampler.frequency_penalty, "frequency penalty")
      ->capture_default_str();
  app.add_option("-s,--seed", seed, "RNG seed (-1: random)")->capture_default_str();
  app.add_option("--stop", gen.stop, "stop string (repeatable)");
  app.add_flag("--ignore-eos", gen.ignore_eog, "keep generating past end-of-generation tokens");
  app.add_flag("--chat,--conversation", chat,
               "chat through the model's chat template (interactive without -p)");
  app.add_flag("-i,--interactive", interactive, "interactive chat: one user message per line");
  app.add_option("--system", system_prompt, "system message for --chat");
  app.add_option("--chat-template", chat_template,
                 "force a template family (chatml, qwen2, qwen2.5, qwen3, ...)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (opts.model_path.empty()) opts.model_path = default_model_path();
    if (interactive) chat = true;
    if (kv_type != "auto") opts.kv_type = qwen::parse_type(kv_type);
    opts.cpu_exact = exact;
    QWEN_CHECK(chat || !prompt.empty(), "give a prompt with -p TEXT, or use --chat / -i");
    gen.sampler.seed = seed >= 0 ? uint64_t(seed) : std::random_device{}();
    ProgressBar bar;
    opts.on_progress = std::ref(bar);
    auto engine = qwen::Engine::load(opts);
    QWEN_CHECK(!exact || engine->backend().kind() == qwen::DeviceKind::CPU,
               "--exact applies to the cpu backend only, not to ", engine->backend().name());
    const qwen::ModelConfig& cfg = engine->config();
    std::fprintf(stderr, "model: %s (%s, %d layers, %d embd, vocab %d) on %s, ctx %d, loaded in %.0f ms\n",
                 opts.model_path.c_str(), cfg.arch_name.c_str(), cfg.n_layer, cfg.n_embd, cfg.n_vocab,
                 engine->backend().name().c_str(), engine->n_ctx(), engine->load_ms());
    qwen::Session session(*engine);
    const size_t weight_bytes = engine->model().weights().nbytes();

    if (!chat) {
      print_timing(session.generate(std::string_view(prompt), gen, stream_out), weight_bytes);
      return 0;
    }
    const qwen::Tokenizer& tok = engine->tokenizer();
    const qwen::ChatTemplate tmpl = qwen::ChatTemplate::for_tokenizer(tok, chat_template);
    std::vector<qwen::ChatMessage> history;
    if (!system_prompt.empty()) history.push_back({"system", system_prompt});
    // One user turn: render the whole conversation (the slot reuses the cached prefix).
    auto turn = [&](const std::string& user) {
      g_interrupted = false;
      history.push_back({"user", user});
      const std::string text = tmpl.render(history, /*add_generation_prompt=*/true);
      const qwen::Completion c = session.generate(tok.encode(text, /*parse_special=*/true), gen, stream_out);
      history.push_back({"assistant", c.text});
      print_timing(c, weight_bytes);
    };
    if (!prompt.empty()) turn(prompt);
    if (!prompt.empty() && !interactive) return 0;
    std::signal(SIGINT, on_sigint);
    std::fprintf(stderr,
                 "(one message per line; Ctrl-C stops a reply; /exit, Ctrl-D or Ctrl-C twice quits)\n");
    std::string line;
    for (;;) {
      std::fprintf(stderr, "\n> ");
      std::fflush(stderr);
      if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
      if (line.empty()) continue;
      turn(line);
    }
  } catch (const std::exception& e) {
    std::cerr << "\nqwen-cli: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
