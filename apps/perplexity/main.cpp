// qwen-perplexity: perplexity of a model on a text file, and the KL divergence of its token
// distributions against a base model's, with llama-perplexity's conventions.
//
// The file is tokenized once (BOS added when the model asks for it) and cut into windows of -c
// tokens; each window is evaluated from an empty context and only its second half is scored
// (positions c/2 .. c-2 predict tokens c/2+1 .. c-1), so every scored token sees at least c/2
// tokens of context. A model that adds BOS gets BOS as the first token of every window.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "kl_file.h"
#include "model/config.h"
#include "runtime/kv_cache.h"
#include "runtime/session.h"
#include "scores.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Options {
  qwen::EngineOptions engine;
  std::string text_file, kl_base;
  std::string kv_type = "auto", ctk, ctv;  // --kv-type, -ctk, -ctv
  int n_ctx = 512, chunks = -1;
  bool kl = false, json = false, verbose = false;
};

// Windows of n_ctx tokens from the text file: at most `chunks` of them (-1: all that fit).
qwen::ppl::KlHeader windows_from_text(const Options& o, const qwen::gguf::File& file) {
  std::ifstream in(o.text_file, std::ios::binary);
  QWEN_CHECK(in.good(), "-f: cannot open ", o.text_file);
  std::stringstream text;
  text << in.rdbuf();
  const qwen::Tokenizer tok(file);
  const std::vector<int32_t> ids = tok.encode(text.str(), /*parse_special=*/false, /*add_special=*/true);
  const int64_t fit = int64_t(ids.size()) / o.n_ctx;
  QWEN_CHECK(fit >= 1, "-f ", o.text_file, " has ", ids.size(), " tokens, fewer than one window of -c ",
             o.n_ctx);
  qwen::ppl::KlHeader h;
  h.n_ctx = o.n_ctx;
  h.n_vocab = tok.n_vocab();
  h.n_chunk = int32_t(o.chunks < 0 ? fit : std::min<int64_t>(o.chunks, fit));
  h.first = o.n_ctx / 2;
  h.tokens.assign(ids.begin(), ids.begin() + int64_t(h.n_chunk) * o.n_ctx);
  if (tok.add_bos()) {
    for (int32_t c = 0; c < h.n_chunk; ++c) h.tokens[size_t(c) * size_t(o.n_ctx)] = tok.bos();
  }
  return h;
}

json perplexity_json(const qwen::ppl::Perplexity& p) {
  return {{"ppl", p.ppl},
          {"ppl_stderr", p.ppl_stderr},
          {"nll", p.nll},
          {"nll_stderr", p.nll_stderr},
          {"n_scored", p.n}};
}

json percentiles_json(std::span<const double> at, const std::vector<double>& values) {
  json j = json::object();
  for (size_t i = 0; i < values.size(); ++i) j[qwen::str(at[i])] = values[i];
  return j;
}

void print_kl(const qwen::ppl::KlSummary& s) {
  using qwen::ppl::kDeltaPPercentiles;
  using qwen::ppl::kKldPercentiles;
  std::printf("====== Perplexity statistics ======\n");
  std::printf("Mean PPL(Q)               : %10.6f ± %.6f\n", s.ppl_q.ppl, s.ppl_q.ppl_stderr);
  std::printf("Mean PPL(base)            : %10.6f ± %.6f\n", s.ppl_base.ppl, s.ppl_base.ppl_stderr);
  std::printf("Mean ln(PPL(Q)/PPL(base)) : %10.6f ± %.6f\n", s.ln_ppl_ratio.mean, s.ln_ppl_ratio.stderr_);
  std::printf("\n====== KL divergence statistics ======\n");
  std::printf("Mean    KLD: %10.6f ± %.6f\n", s.kld.mean, s.kld.stderr_);
  for (size_t i = 0; i < s.kld_percentiles.size(); ++i) {
    std::printf("%5g%%  KLD: %10.6f\n", kKldPercentiles[i], s.kld_percentiles[i]);
  }
  std::printf("\n====== Token probability statistics ======\n");
  for (size_t i = 0; i < s.delta_p_percentiles.size(); ++i) {
    std::printf("%5g%%   Δp: %+9.4f%%\n", kDeltaPPercentiles[i], 100.0 * s.delta_p_percentiles[i]);
  }
  std::printf("RMS Δp     : %9.4f%%\n", 100.0 * s.delta_p_rms);
  std::printf("Same top p : %9.4f ± %.4f %%\n", 100.0 * s.same_top.mean, 100.0 * s.same_top.stderr_);
}

json kl_json(const qwen::ppl::KlSummary& s) {
  return {{"ppl", perplexity_json(s.ppl_q)},
          {"ppl_base", perplexity_json(s.ppl_base)},
          {"ln_ppl_ratio", {{"mean", s.ln_ppl_ratio.mean}, {"stderr", s.ln_ppl_ratio.stderr_}}},
          {"kld",
           {{"mean", s.kld.mean},
            {"stderr", s.kld.stderr_},
            {"percentiles", percentiles_json(qwen::ppl::kKldPercentiles, s.kld_percentiles)}}},
          {"same_top", {{"fraction", s.same_top.mean}, {"stderr", s.same_top.stderr_}}},
          {"delta_p",
           {{"rms", s.delta_p_rms},
            {"percentiles", percentiles_json(qwen::ppl::kDeltaPPercentiles, s.delta_p_percentiles)}}}};
}

int run(Options& o, bool ctx_given) {
  // Everything a flag or a file can get wrong is checked here, before the weights load.
  auto file = qwen::gguf::File::open(o.engine.model_path);
  const qwen::ModelConfig cfg = qwen::ModelConfig::from_gguf(*file);
  std::unique_ptr<qwen::ppl::KlReader> base;
  qwen::ppl::KlHeader h;
  if (o.kl) {
    base = std::make_unique<qwen::ppl::KlReader>(o.kl_base);
    h = base->header();
    QWEN_CHECK(!ctx_given || o.n_ctx == h.n_ctx, "-c ", o.n_ctx, " differs from the window of ", h.n_ctx,
               " tokens that --kl-divergence-base ", o.kl_base, " was written with (leave -c out)");
    QWEN_CHECK(h.n_vocab == cfg.n_vocab, "--kl-divergence-base ", o.kl_base, " holds a vocabulary of ",
               h.n_vocab, " tokens, the model ", o.engine.model_path, " has ", cfg.n_vocab);
    if (o.chunks > 0 && o.chunks < h.n_chunk) {
      h.n_chunk = o.chunks;
      h.tokens.resize(size_t(h.n_chunk) * size_t(h.n_ctx));
    }
  }
  const int n_ctx = o.kl ? h.n_ctx : o.n_ctx;
  QWEN_CHECK(n_ctx <= cfg.n_ctx_train, "-c ", n_ctx, " exceeds the context the model was trained on (",
             cfg.n_ctx_train, " tokens, ", cfg.arch_name, ".context_length)");
  if (!o.kl) h = windows_from_text(o, *file);
  file.reset();
  std::unique_ptr<qwen::ppl::KlWriter> writer;  // opened now: a path that cannot be written fails early
  if (!o.kl && !o.kl_base.empty()) writer = std::make_unique<qwen::ppl::KlWriter>(o.kl_base, h);

  o.engine.n_ctx = h.n_ctx;
  o.engine.max_batch = std::min(o.engine.max_batch, h.n_ctx);
  auto engine = qwen::Engine::load(o.engine);
  std::fprintf(
      stderr, "qwen-perplexity: %s on %s, KV %s, %d windows of %d tokens, scoring positions %d..%d of each\n",
      o.engine.model_path.c_str(), engine->backend().name().c_str(), qwen::type_name(engine->kv_type()),
      h.n_chunk, h.n_ctx, h.first + 1, h.n_ctx - 1);

  const size_t n_vocab = size_t(h.n_vocab), rows = size_t(h.rows());
  std::vector<float> logits, scored, base_logits;  // scored: this chunk's rows for the base file
  if (writer) scored.resize(rows * n_vocab);
  std::vector<double> logp(n_vocab), logp_base(n_vocab), nll;
  qwen::ppl::KlSample sample;
  const auto t0 = Clock::now();
  for (int32_t c = 0; c < h.n_chunk; ++c) {
    const std::span<const int32_t> window(h.tokens.data() + size_t(c) * size_t(h.n_ctx), size_t(h.n_ctx));
    engine->eval_all(window, /*step_by_step=*/false, logits);
    if (base) base->read_chunk(c, base_logits);
    for (size_t r = 0; r < rows; ++r) {
      const size_t pos = size_t(h.first) + r;
      const int32_t target = window[pos + 1];
      const std::span<const float> row(logits.data() + pos * n_vocab, n_vocab);
      qwen::ppl::log_softmax(row, logp);
      nll.push_back(-logp[size_t(target)]);
      if (writer) std::copy(row.begin(), row.end(), scored.begin() + std::ptrdiff_t(r * n_vocab));
      if (base) {
        qwen::ppl::log_softmax({base_logits.data() + r * n_vocab, n_vocab}, logp_base);
        sample.add(logp_base, logp, target);
      }
    }
    if (writer) writer->add_chunk(scored);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::fprintf(stderr, "[%d/%d] PPL %.4f (%.1f s, %.2f s per window)\n", c + 1, h.n_chunk,
                 qwen::ppl::perplexity(nll).ppl, s, s / (c + 1));
  }
  if (writer) writer->finish();

  const qwen::ppl::Perplexity p = qwen::ppl::perplexity(nll);
  if (o.json) {
    json out = {{"model", o.engine.model_path},
                {"backend", engine->backend().name()},
                {"kv_type", qwen::type_name(engine->kv_type())},
                {"n_ctx", h.n_ctx},
                {"n_chunks", h.n_chunk},
                {"first_scored", h.first + 1}};
    out.update(perplexity_json(p));
    if (!o.text_file.empty()) out["file"] = o.text_file;
    if (writer) out["kl_divergence_base_written"] = o.kl_base;
    if (base) out["kl_divergence"] = kl_json(qwen::ppl::summarize(sample));
    std::cout << out.dump(2) << "\n";
  } else if (base) {
    print_kl(qwen::ppl::summarize(sample));
  } else {
    std::printf("Final estimate: PPL = %.4f +/- %.5f (%lld tokens scored)\n", p.ppl, p.ppl_stderr,
                static_cast<long long>(p.n));
    if (writer) std::printf("base logits written to %s\n", o.kl_base.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "qwen-perplexity: perplexity of a GGUF model on a text file, and KL divergence against a base"};
  app.option_defaults()->always_capture_default();
  Options o;
  app.add_option("-m,--model", o.engine.model_path, "GGUF model file")->required();
  app.add_option("-f,--file", o.text_file,
                 "text file to score (not with --kl-divergence: the base file holds the tokens)");
  auto* ctx = app.add_option("-c,--ctx-size", o.n_ctx, "window in tokens; its second half is scored")
                  ->check(CLI::Range(4, 1 << 20));
  app.add_option("--chunks", o.chunks, "windows to score (-1: all that fit in the file)");
  app.add_option("-b,--batch-size", o.engine.max_batch, "most tokens per forward call")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("-t,--threads", o.engine.n_threads, "CPU threads (0: all)")->check(CLI::Range(0, 4096));
  app.add_option("--device", o.engine.device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--kl-divergence-base", o.kl_base,
                 "file of the base model's logits: written by a run without --kl-divergence, read by one "
                 "with it");
  app.add_flag("--kl-divergence", o.kl,
               "compare with the --kl-divergence-base file: KL divergence, top-1 agreement, Δp percentiles");
  app.add_option("--kv-type", o.kv_type,
                 "KV cache type: auto (f16 on cuda, f32 on cpu), f32, f16, bf16 or q8_0");
  app.add_option("--cache-type-k", o.ctk, "(-ctk) KV cache type, as llama.cpp; K and V share it");
  app.add_option("--cache-type-v", o.ctv, "(-ctv) see -ctk");
  app.add_flag("--json", o.json, "print the results as one JSON object on stdout");
  app.add_flag("--verbose", o.verbose, "errors also name the source location that raised them");
  // llama.cpp's -ctk / -ctv, spelled with one dash, become --cache-type-k / --cache-type-v.
  std::vector<std::string> args = qwen::kv_flag_spellings({argv, argv + argc});
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  CLI11_PARSE(app, int(arg_ptrs.size()), arg_ptrs.data());
  try {
    QWEN_CHECK(o.chunks == -1 || o.chunks >= 1, "--chunks ", o.chunks,
               " must be -1 (all windows) or at least 1");
    if (o.kl) {
      QWEN_CHECK(!o.kl_base.empty(),
                 "--kl-divergence needs --kl-divergence-base FILE (the base run's output)");
      QWEN_CHECK(o.text_file.empty(),
                 "-f is not used with --kl-divergence: the windows' tokens come from --kl-divergence-base ",
                 o.kl_base);
    } else {
      QWEN_CHECK(!o.text_file.empty(), "give the text to score with -f FILE");
    }
    o.engine.kv_type = qwen::kv_type_from_flags(o.kv_type, o.ctk, o.ctv);
    return run(o, ctx->count() > 0);
  } catch (const std::exception& e) {
    std::cerr << "qwen-perplexity: error: " << qwen::error_text(e, o.verbose) << "\n";
    return 1;
  }
}
