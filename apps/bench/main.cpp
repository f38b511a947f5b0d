// qwen-bench: prompt processing (pp) and token generation (tg) throughput, measured separately
// like llama-bench: mean ± std over -r repetitions after one warm-up, tok/s and effective GB/s
// (bytes that must be read per token / time, from Model's byte counts) and their % of --peak-gbs
// (the memory roofline; default on cuda: H100 SXM's 3,050 GB/s), with the GPU's name and clocks.
//
//  pp<N>: one forward over N prompt tokens at positions 0..N-1 (logits of the last one only).
//  tg<N>: N greedy decode steps from an empty cache, one token per forward; the next token is
//         the argmax of the previous logits, computed on the device and written straight into
//         the input buffer, so no logits reach the host; the position is advanced on the device
//         too. On a backend with graphs the step (forward + argmax + advance) is captured once
//         and replayed back to back: the host only queues replays and never waits per token.
//  tg<N> xB (-b B, several values allowed): B sequences decode together, one token each per
//         step (the batched step of a server with B streams, without its host work); t/s counts
//         all B * N tokens, GB/s the bytes of one step (weights once, B KV caches) per step time.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/file_type.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "runtime/kv_cache.h"
#include "util/check.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Stats {
  double mean = 0, std = 0;
};
Stats stats(const std::vector<double>& v) {
  Stats s;
  if (v.empty()) return s;
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = v.size() > 1 ? std::sqrt(ss / double(v.size() - 1)) : 0.0;
  return s;
}

// First line of a command's output ("" when it fails): used for nvidia-smi's clock report.
std::string command_line(const std::string& cmd) {
  std::string out;
  if (FILE* p = popen((cmd + " 2>/dev/null").c_str(), "r")) {
    char buf[512];
    if (std::fgets(buf, sizeof buf, p)) out = buf;
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

struct Result {
  std::string test;
  int n_tokens;
  Stats tok_s, gb_s;
  std::vector<double> seconds;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-bench: prompt processing and token generation throughput"};
  std::string model_path, device = "auto", kv_name = "f16", ctk, ctv;
  double peak_gbs = 0;
  int n_prompt = 512, n_gen = 128, reps = 5, n_threads = 0, depth = 0, ubatch = 0;
  std::vector<int> batches = {1};
  bool json = false;
  app.add_option("-m,--model", model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  app.add_option("-p,--n-prompt", n_prompt, "prompt tokens for the pp test (0: skip)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--ubatch-size", ubatch,
                 "(-ub) most prompt tokens per forward in the pp test, as llama-bench's -ub (0: the whole prompt "
                 "in one forward up to 32768 tokens, longer prompts in forwards of 32768)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("-n,--n-gen", n_gen, "generated tokens for the tg test (0: skip)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("-d,--n-depth", depth,
                 "tokens already in the KV cache of every sequence before each test (as llama-bench -d)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("-b,--batch", batches, "sequences decoded together in the tg test (several: one test each)")
      ->check(CLI::PositiveNumber)
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("-r,--repetitions", reps, "timed repetitions after one warm-up")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--device", device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("-t,--threads", n_threads, "CPU threads (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  bool exact = false;
  app.add_flag("--exact", exact,
               "the oracle arithmetic (slower): on the CPU fp32 from dequantized weights instead of 8-bit activations; on CUDA activations in two fp16 halves and fp32 attention instead of one fp16 pass and tensor-core attention");
  auto* kv_opt =
      app.add_option("--kv-type", kv_name, "KV cache type: f32, f16, bf16 or q8_0")->capture_default_str();
  app.add_option("--cache-type-k", ctk, "(-ctk) KV cache type, as llama.cpp; K and V share it");
  app.add_option("--cache-type-v", ctv, "(-ctv) see -ctk");
  app.add_option("--peak-gbs", peak_gbs,
                 "memory bandwidth in GB/s for the '% of peak' column (0: 3050, the H100 SXM's, on cuda; "
                 "no column on cpu)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--json", json, "print JSON instead of a markdown table");
  bool verbose = false;
  app.add_flag("--verbose", verbose, "errors also name the source location that raised them");
  // llama.cpp's -ctk / -ctv, spelled with one dash, become --cache-type-k / --cache-type-v.
  // llama-bench's -ub likewise becomes --ubatch-size.
  std::vector<std::string> args = qwen::kv_flag_spellings({argv, argv + argc});
  for (std::string& a : args)
    if (a == "-ub") a = "--ubatch-size";
  std::vector<char*> arg_ptrs;
  for (std::string& a : args) arg_ptrs.push_back(a.data());
  CLI11_PARSE(app, int(arg_ptrs.size()), arg_ptrs.data());

  try {
    auto file = qwen::gguf::File::open(model_path);
    auto backend = qwen::make_backend(device, n_threads, exact);
    qwen::Backend& be = *backend;
    const int max_seq = *std::max_element(batches.begin(), batches.end());
    // The pp test's forwards (kernel grids take at most 65,535 tokens; see -ub).
    constexpr int kMaxForward = 32768;
    const int pp_forward = ubatch > 0 ? std::min(ubatch, n_prompt) : std::min(n_prompt, kMaxForward);
    // The depth is written in chunks of up to 512 tokens (or the pp test's forward, if larger).
    const int max_batch = std::max({1, pp_forward, max_seq, std::min(depth, 512)});
    qwen::Model model(*file, be, max_batch);
    const auto& c = model.config();
    const int n_ctx = depth + std::max(n_prompt, n_gen) + 1;
    // The default f16 gives way to -ctk / -ctv; a --kv-type given too must agree with them.
    const qwen::GGMLType kv_type = qwen::kv_type_from_flags(kv_opt->count() > 0 ? kv_name : "auto", ctk, ctv)
                                       .value_or(qwen::GGMLType::F16);
    kv_name = qwen::type_name(kv_type);
    if (peak_gbs == 0 && be.kind() == qwen::DeviceKind::CUDA) peak_gbs = 3050;
    qwen::KVCache kv(be, c, max_seq, n_ctx, kv_type);

    // Device-side inputs: ids, positions (0..n-1), sequence ids (0), output rows (0, 1, ...:
    // row_d + k points to the row index k), logits of up to max_seq rows.
    const int n_buf = std::max(max_batch, n_prompt);
    std::vector<int32_t> ids(n_buf), pos(n_buf), seq(n_buf, 0), rows(n_buf);
    for (int i = 0; i < n_buf; ++i) ids[i] = int32_t((i * 7919 + 13) % c.n_vocab), pos[i] = i, rows[i] = i;
    auto* ids_d = static_cast<int32_t*>(be.alloc(n_buf * 4));
    auto* pos_d = static_cast<int32_t*>(be.alloc(n_buf * 4));
    auto* seq_d = static_cast<int32_t*>(be.alloc(n_buf * 4));
    auto* row_d = static_cast<int32_t*>(be.alloc(n_buf * 4));
    auto* logits_d = static_cast<float*>(be.alloc(size_t(max_seq) * c.n_vocab * 4));
    be.upload(ids_d, ids.data(), n_buf * 4);
    be.upload(pos_d, pos.data(), n_buf * 4);
    be.upload(seq_d, seq.data(), n_buf * 4);
    be.upload(row_d, rows.data(), n_buf * 4);

    // Depth: every sequence's cache holds positions [0, depth) before the tests; the tests write
    // only positions from depth on, so it is filled once.
    for (int sq = 0; depth > 0 && sq < max_seq; ++sq) {
      for (int off = 0; off < depth; off += max_batch) {
        const int n = std::min(max_batch, depth - off);
        std::vector<int32_t> p(static_cast<size_t>(n)), q(static_cast<size_t>(n), sq);
        std::iota(p.begin(), p.end(), off);
        be.upload(pos_d, p.data(), n * 4);
        be.upload(seq_d, q.data(), n * 4);
        model.forward(qwen::Batch{n, ids_d, pos_d, seq_d, n}, kv.layers(), row_d, 1, logits_d);
      }
    }
    const std::string at_depth = depth > 0 ? " @ d" + std::to_string(depth) : "";

    const size_t w_bytes = model.streamed_weight_bytes();
    const size_t kv_row_bytes = model.kv_bytes_per_position(kv_type);
    std::vector<Result> results;

    if (n_prompt > 0) {
      std::vector<int32_t> p(static_cast<size_t>(n_prompt)), q(static_cast<size_t>(n_prompt), 0);
      std::iota(p.begin(), p.end(), depth);
      be.upload(pos_d, p.data(), n_prompt * 4);
      be.upload(seq_d, q.data(), n_prompt * 4);
      // Forwards of pp_forward tokens; the last one's last row gives the logits.
      const auto prompt = [&] {
        for (int off = 0; off < n_prompt; off += pp_forward) {
          const int n = std::min(pp_forward, n_prompt - off);
          const qwen::Batch b{n, ids_d + off, pos_d + off, seq_d + off, n};
          model.forward(b, kv.layers(), row_d + (off + n == n_prompt ? n - 1 : 0), 1, logits_d);
        }
      };
      Result r{"pp" + std::to_string(n_prompt) + at_depth, n_prompt, {}, {}, {}};
      for (int rep = 0; rep <= reps; ++rep) {  // rep 0 is the warm-up
        be.synchronize();
        const auto t0 = Clock::now();
        prompt();
        be.synchronize();
        if (rep > 0) r.seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      std::vector<double> tps, gbs;
      // Bytes: the weights once per forward plus the K/V reads (the depth and n^2/2 causal rows)
      // and writes (n rows).
      const double n_forwards = double((n_prompt + pp_forward - 1) / pp_forward);
      const double bytes =
          double(w_bytes) * n_forwards + double(kv_row_bytes) * n_prompt * (depth + n_prompt * 0.5 + 1);
      for (double s : r.seconds) tps.push_back(n_prompt / s), gbs.push_back(bytes / s / 1e9);
      r.tok_s = stats(tps), r.gb_s = stats(gbs);
      results.push_back(r);
    }

    const bool graphs = n_gen > 0 && be.supports_graphs();
    for (int B : n_gen > 0 ? batches : std::vector<int>{}) {
      // B sequences 0..B-1, each at position `depth` with its own first token; row b is sequence b's.
      std::vector<int32_t> starts(static_cast<size_t>(B), depth), seqs(static_cast<size_t>(B));
      std::iota(seqs.begin(), seqs.end(), 0);
      be.upload(seq_d, seqs.data(), B * 4);
      const qwen::Batch step_batch{B, ids_d, pos_d, seq_d, 1};
      auto step = [&] {
        model.forward(step_batch, kv.layers(), row_d, B, logits_d);
        be.argmax(ids_d, logits_d, B, c.n_vocab);  // next input tokens, never leave the device
        be.add_i32(pos_d, 1, B);                   // next positions, likewise
      };
      // One eager step first: a backend may size scratch on first use, which a capture forbids.
      be.upload(pos_d, starts.data(), B * 4);
      step();
      if (graphs) {
        be.begin_capture(B);
        step();
        be.end_capture();
      }
      Result r{"tg" + std::to_string(n_gen) + (B > 1 ? " x" + std::to_string(B) : "") + at_depth, n_gen * B, {}, {},
               {}};
      for (int rep = 0; rep <= reps; ++rep) {
        be.upload(ids_d, ids.data(), B * 4);
        be.upload(pos_d, starts.data(), B * 4);
        be.synchronize();
        const auto t0 = Clock::now();
        for (int32_t p = 0; p < n_gen; ++p) {
          if (graphs) {
            be.replay(B);
          } else {
            step();
          }
        }
        be.synchronize();
        if (rep > 0) r.seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      std::vector<double> tps, gbs;
      double bytes = 0;  // every step of the run: its depth grows by one per step
      for (int i = 0; i < n_gen; ++i) bytes += double(model.decode_bytes(depth + i, kv_type, B));
      for (double s : r.seconds) tps.push_back(double(n_gen) * B / s), gbs.push_back(bytes / s / 1e9);
      r.tok_s = stats(tps), r.gb_s = stats(gbs);
      results.push_back(r);
    }

    std::string gpu;
    if (be.kind() == qwen::DeviceKind::CUDA) {
      gpu = command_line(
          "nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,driver_version "
          "--format=csv,noheader");
    }
    const std::string type_str = qwen::gguf::file_type_name(*file);
    const double size_mib = double(model.weights().nbytes()) / (1 << 20);
    const std::string model_name = std::filesystem::path(model_path).filename().string();

    if (json) {
      nlohmann::json out;
      out["model"] = model_name;
      out["arch"] = c.arch_name;
      out["type"] = type_str;
      out["size_bytes"] = model.weights().nbytes();
      out["backend"] = be.name();
      out["gpu_info"] = gpu;
      out["kv_type"] = kv_name;
      out["depth"] = depth;
      if (n_prompt > 0) out["ubatch"] = pp_forward;  // prompt tokens per forward of the pp test
      out["cuda_graphs"] = graphs;
      out["bytes_per_token"] = model.decode_bytes(depth, kv_type);  // one decode step at the depth
      out["weight_bytes_per_step"] = w_bytes;
      out["kv_bytes_per_position"] = kv_row_bytes;
      if (peak_gbs > 0) out["peak_gbs"] = peak_gbs;
      for (const Result& r : results) {
        nlohmann::json t = {
            {"test", r.test},           {"n_tokens", r.n_tokens},   {"tok_s_mean", r.tok_s.mean},
            {"tok_s_std", r.tok_s.std}, {"gb_s_mean", r.gb_s.mean}, {"gb_s_std", r.gb_s.std},
            {"seconds", r.seconds}};
        if (peak_gbs > 0) t["peak_pct"] = 100 * r.gb_s.mean / peak_gbs;
        out["tests"].push_back(t);
      }
      std::cout << out.dump(2) << "\n";
    } else {
      std::printf("model: %s (%s, %s, %.1f MiB, %.1f MB read per token at depth %d), backend: %s%s, KV %s\n",
                  model_name.c_str(), c.arch_name.c_str(), type_str.c_str(), size_mib,
                  model.decode_bytes(depth, kv_type) / 1e6, depth, be.name().c_str(),
                  graphs ? " (CUDA graph)" : "", kv_name.c_str());
      if (!gpu.empty())
        std::printf("gpu (name, sm clock, mem clock, max sm, max mem, driver): %s\n", gpu.c_str());
      const bool pct = peak_gbs > 0;
      if (pct) std::printf("%% of peak: GB/s over --peak-gbs %.0f\n", peak_gbs);
      std::printf("\n| model | type | size MiB | backend | test | t/s | GB/s |%s\n",
                  pct ? " % of peak |" : "");
      std::printf("| --- | --- | ---: | --- | --- | ---: | ---: |%s\n", pct ? " ---: |" : "");
      for (const Result& r : results) {
        std::printf("| %s | %s | %.1f | %s | %s | %.1f ± %.1f | %.1f ± %.1f |", c.arch_name.c_str(),
                    type_str.c_str(), size_mib, be.name().c_str(), r.test.c_str(), r.tok_s.mean, r.tok_s.std,
                    r.gb_s.mean, r.gb_s.std);
        if (pct) std::printf(" %.1f |", 100 * r.gb_s.mean / peak_gbs);
        std::printf("\n");
      }
    }
    for (void* p : {static_cast<void*>(ids_d), static_cast<void*>(pos_d), static_cast<void*>(seq_d),
                    static_cast<void*>(row_d), static_cast<void*>(logits_d)})
      be.free(p);
  } catch (const std::exception& e) {
    std::cerr << "qwen-bench: error: " << qwen::error_text(e, verbose) << "\n";
    return 1;
  }
  return 0;
}
