// qwen-cli: text generation and chat on a GGUF model. Streams text to stdout; the progress bar,
// timing and errors go to stderr. Flags follow llama-cli's names and meanings where they exist
// (llama_spellings() lists the single-dash long ones), and every value is range-checked before
// the model loads.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/gguf.h"
#include "model/config.h"
#include "model/model.h"
#include "runtime/kv_cache.h"
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

// llama-cli spells some long options with one dash ("-cnv"), which CLI11 would read as a bundle
// of short flags (-c nv). They are rewritten to their long names before parsing.
std::vector<std::string> llama_spellings(int argc, char** argv) {
  static const std::pair<const char*, const char*> kMap[] = {
      {"-cnv", "--conversation"}, {"-no-cnv", "--no-conversation"}, {"-sys", "--system-prompt"},
      {"-ctk", "--cache-type-k"}, {"-ctv", "--cache-type-v"},       {"-ngl", "--n-gpu-layers"},
  };
  std::vector<std::string> args(argv, argv + argc);
  for (std::string& a : args) {
    for (const auto& [from, to] : kMap) {
      if (a == from) a = to;
    }
  }
  return args;
}

// llama-cli's -e: \n, \t, \r, \\, \' and \" in prompts become the characters they name.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    switch (const char c = s[++i]) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case '\\':
      case '\'':
      case '"':
        out += c;
        break;
      default:
        out += '\\', out += c;  // not an escape: kept as written
    }
  }
  return out;
}

// A one-line bar on stderr, redrawn only when the percentage changes. Only on a terminal: in a
// redirected log its \r frames would be noise.
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

// GB/s: the bytes of a decode step (Model::decode_bytes: the weights once, the KV cache read and
// written) at the generation's mean depth, times tok/s: the effective memory bandwidth of
// generation (ARCHITECTURE §Rules 7).
void print_timing(const qwen::Completion& c, qwen::Engine& engine) {
  const qwen::Timing& t = c.timing;
  const int64_t depth = int64_t(t.n_cached) + t.n_prompt + t.n_gen / 2;
  const size_t step_bytes = engine.model().decode_bytes(depth, engine.kv_type());
  std::fprintf(stderr,
               "\n[prompt: %d tokens (%d cached) in %.1f ms, %.1f tok/s | generation: %d tokens in %.1f ms, "
               "%.1f tok/s, %.2f GB/s | finish: %s]\n",
               t.n_prompt, t.n_cached, t.prompt_ms, t.prompt_tok_s(), t.n_gen, t.gen_ms, t.gen_tok_s(),
               double(step_bytes) * t.gen_tok_s() / 1e9, qwen::finish_reason_name(c.finish));
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

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QWEN_CHECK(in.good(), "-f: cannot open ", path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Conversation {
  std::string system;
  std::vector<qwen::ChatMessage> turns;  // user, assistant, user, ... (no system message)

  std::vector<qwen::ChatMessage> messages() const {
    std::vector<qwen::ChatMessage> all;
    if (!system.empty()) all.push_back({"system", system});
    all.insert(all.end(), turns.begin(), turns.end());
    return all;
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-cli: generate text or chat with a Qwen / Llama GGUF model"};
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", std::string("qwen-cli (qwen.cu) ") + QWEN_VERSION +
                                        (qwen::cuda_available() ? ", CUDA" : ", CPU only"));
  qwen::EngineOptions opts;
  qwen::GenerateParams gen;
  std::string prompt, prompt_file, system_prompt, chat_template, kv_type = "auto", ctk, ctv;
  bool cnv = false, no_cnv = false, interactive = false, escape = false, jinja = false, verbose = false;
  int64_t seed = -1;
  int n_gpu_layers = -1;
  app.add_option("-m,--model", opts.model_path,
                 "GGUF model (default: $QWEN_MODEL, else the cached default model)");
  app.add_option("-p,--prompt", prompt, "prompt text (in conversation mode: the first user message)");
  app.add_option("-f,--file", prompt_file, "read the prompt from a file")->excludes("--prompt");
  app.add_flag("-e,--escape", escape,
               "turn \\n, \\t, \\r, \\\\, \\', \\\" in -p / -f / -sys into the characters");
  app.add_option("-n,--n-predict", gen.max_tokens, "tokens to generate (-1: until end of generation)")
      ->check(CLI::Range(-1, 1 << 30));
  app.add_option("-c,--ctx-size", opts.n_ctx, "context size in tokens (0: the model's trained context)")
      ->check(CLI::Range(0, 1 << 30));
  app.add_option("--ctx-overflow", opts.ctx_overflow,
                 "a context beyond the model's trained one: refuse (error) or warn and run")
      ->transform(CLI::CheckedTransformer(std::map<std::string, qwen::CtxOverflow>{
          {"refuse", qwen::CtxOverflow::Refuse}, {"warn", qwen::CtxOverflow::Warn}}))
      ->default_str("refuse");
  app.add_option("-b,--batch-size", opts.max_batch, "most prompt tokens per forward call")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("-t,--threads", opts.n_threads, "CPU threads (0: all)")->check(CLI::Range(0, 4096));
  bool exact = false;
  app.add_flag("--exact", exact,
               "the oracle arithmetic (slower): on the CPU fp32 from dequantized weights instead of 8-bit activations; on CUDA activations in two fp16 halves and fp32 attention instead of one fp16 pass and tensor-core attention");
  app.add_option("--kv-type", kv_type,
                 "KV cache type: auto (f16 on cuda, f32 on cpu), f32, f16, bf16 or q8_0");
  app.add_option("--cache-type-k", ctk,
                 "(-ctk) KV cache type, as llama.cpp: f32, f16, bf16 or q8_0; K and V share it");
  app.add_option("--cache-type-v", ctv, "(-ctv) see -ctk");
  app.add_option("--device", opts.device, "auto, cpu or cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--n-gpu-layers", n_gpu_layers,
                 "(-ngl) accepted for llama.cpp command lines: on cuda every layer runs on the GPU; 0 means "
                 "--device cpu")
      ->check(CLI::Range(-1, 1 << 20));
  app.add_option("--temp", gen.sampler.temperature, "temperature (0: greedy)")->check(CLI::Range(0.0, 1e6));
  app.add_option("--top-k", gen.sampler.top_k, "top-k (0: off)")->check(CLI::Range(0, 1 << 30));
  app.add_option("--top-p", gen.sampler.top_p, "top-p (1: off)")->check(CLI::Range(0.0, 1.0));
  app.add_option("--min-p", gen.sampler.min_p, "min-p (0: off)")->check(CLI::Range(0.0, 1.0));
  app.add_option("--repeat-penalty", gen.sampler.repeat_penalty, "repetition penalty (1: off)")
      ->check(CLI::Validator(
          [](std::string& v) {
            try {
              if (std::stod(v) > 0.0) return std::string();
            } catch (const std::exception&) {  // not a number: the same message
            }
            return "value " + v + " must be a number above 0";
          },
          "FLOAT > 0"));
  app.add_option("--repeat-last-n", gen.sampler.penalty_last_n, "tokens the penalties look back (-1: all)")
      ->check(CLI::Range(-1, 1 << 30));
  app.add_option("--presence-penalty", gen.sampler.presence_penalty, "presence penalty")
      ->check(CLI::Range(-100.0, 100.0));
  app.add_option("--frequency-penalty", gen.sampler.frequency_penalty, "frequency penalty")
      ->check(CLI::Range(-100.0, 100.0));
  app.add_option("-s,--seed", seed, "RNG seed (-1: random)")->check(CLI::Range(int64_t(-1), INT64_MAX));
  app.add_option("--stop", gen.stop, "stop string (repeatable)");
  app.add_flag("--ignore-eos", gen.ignore_eog, "keep generating past end-of-generation tokens");
  app.add_flag("--conversation,--chat", cnv,
               "(-cnv) chat through the chat template; the default when the model has one");
  app.add_flag("--no-conversation", no_cnv, "(-no-cnv) plain text completion of the prompt")
      ->excludes("--conversation");
  app.add_flag("-i,--interactive", interactive,
               "interactive chat: one user message per line (after -p, if given)");
  app.add_option("--system-prompt,--system", system_prompt, "(-sys) system message of the conversation");
  app.add_option(
      "--chat-template", chat_template,
      "a built-in template instead of the GGUF's own (chatml, qwen2, qwen2.5, qwen3, llama3, gemma, ...)");
  app.add_flag("--jinja", jinja, "accepted for llama.cpp command lines: chat templates are always rendered");
  app.add_flag("--verbose", verbose, "errors also name the source location that raised them");
  std::vector<std::string> args = llama_spellings(argc, argv);
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  try {
    app.parse(int(arg_ptrs.size()), arg_ptrs.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (opts.model_path.empty()) opts.model_path = default_model_path();
    opts.kv_type = qwen::kv_type_from_flags(kv_type, ctk, ctv);
    opts.exact = exact;
    if (n_gpu_layers == 0) {
      QWEN_CHECK(opts.device != "cuda", "-ngl 0 (no layer on the GPU) contradicts --device cuda");
      opts.device = "cpu";
    }
    if (!prompt_file.empty()) prompt = read_file(prompt_file);
    if (escape) prompt = unescape(prompt), system_prompt = unescape(system_prompt);
    // The model file is opened (metadata only) before the weights load, so that every mistake in
    // the command line is reported at once.
    bool chat = cnv || interactive;
    {
      auto file = qwen::gguf::File::open(opts.model_path);
      if (!cnv && !no_cnv)
        chat = interactive || !chat_template.empty() || file->has("tokenizer.chat_template");
    }
    QWEN_CHECK(!(no_cnv && interactive), "-i is a chat, -no-cnv asks for plain completion: drop one");
    // Not a chat: -no-cnv, or a model without a chat template and no --chat-template.
    const char* why_plain = no_cnv ? "-no-cnv asks for a plain completion"
                                   : "the model has no chat template (name one with --chat-template)";
    QWEN_CHECK(chat || system_prompt.empty(), "-sys / --system-prompt is a chat message, but ", why_plain);
    QWEN_CHECK(chat || chat_template.empty(), "--chat-template needs conversation mode, but ", why_plain);
    QWEN_CHECK(chat || !prompt.empty(), "give a prompt with -p TEXT or -f FILE (", why_plain, ")");
    gen.sampler.seed = seed >= 0 ? uint64_t(seed) : std::random_device{}();
    ProgressBar bar;
    if (isatty(fileno(stderr))) opts.on_progress = std::ref(bar);
    auto engine = qwen::Engine::load(opts);
    const qwen::ModelConfig& cfg = engine->config();
    std::fprintf(
        stderr,
        "model: %s (%s, %d layers, %d embd, vocab %d) on %s, ctx %d, KV cache %.1f MiB, loaded in %.0f ms\n",
        opts.model_path.c_str(), cfg.arch_name.c_str(), cfg.n_layer, cfg.n_embd, cfg.n_vocab,
        engine->backend().name().c_str(), engine->n_ctx(), engine->kv_bytes() / 1048576.0, engine->load_ms());
    qwen::Session session(*engine);

    if (!chat) {
      print_timing(session.generate(std::string_view(prompt), gen, stream_out), *engine);
      return 0;
    }
    const qwen::Tokenizer& tok = engine->tokenizer();
    const qwen::ChatTemplate tmpl = qwen::ChatTemplate::for_tokenizer(tok, chat_template);
    Conversation conv{system_prompt, {}};
    // Context shift: the reply gets room for max_tokens (at most half the context); when the
    // conversation would not leave that much, its oldest turns are dropped, the system prompt kept.
    const int n_ctx = engine->n_ctx();
    const int reply_room = gen.max_tokens > 0 ? std::min(gen.max_tokens, n_ctx / 2) : n_ctx / 2;
    auto fit = [&]() -> std::vector<int32_t> {
      int dropped = 0;
      for (;;) {
        std::vector<int32_t> ids =
            tok.encode(tmpl.render(conv.messages(), /*add_generation_prompt=*/true), /*parse_special=*/true);
        if (int(ids.size()) + reply_room <= n_ctx || conv.turns.size() == 1) {
          if (dropped > 0) {
            std::fprintf(stderr, "[context: dropped the %d oldest messages to fit %d tokens]\n", dropped,
                         n_ctx);
          }
          QWEN_CHECK(int(ids.size()) < n_ctx, "the message needs ", ids.size(),
                     " tokens with the system prompt; the context holds ", n_ctx, " (-c)");
          return ids;
        }
        // Drop the oldest user message and the assistant reply after it.
        const size_t n = std::min<size_t>(2, conv.turns.size() - 1);
        conv.turns.erase(conv.turns.begin(), conv.turns.begin() + std::ptrdiff_t(n));
        dropped += int(n);
      }
    };
    auto turn = [&](const std::string& user) {
      g_interrupted = false;
      conv.turns.push_back({"user", user});
      qwen::Completion c;
      try {
        c = session.generate(fit(), gen, stream_out);
      } catch (const qwen::Error&) {
        conv.turns.pop_back();  // the conversation stays as it was before this message
        throw;
      }
      conv.turns.push_back({"assistant", c.text});
      print_timing(c, *engine);
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
      try {
        turn(line);
      } catch (const qwen::Error& e) {  // e.g. one message too long for the context: the chat goes on
        std::fprintf(stderr, "qwen-cli: %s\n", qwen::error_text(e, verbose).c_str());
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "\nqwen-cli: error: " << qwen::error_text(e, verbose) << "\n";
    return 1;
  }
  return 0;
}
