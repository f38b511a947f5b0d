// qwen-diff: runs two backends on the same tokens and compares every named intermediate of the
// forward pass (the model's tap), in forward order, then the logits. Prints NMSE and max-abs per
// tensor and names the first one above tolerance: the instrument for "which op broke".
//
//   qwen-diff -m model.gguf --prompt "Hello" [--devices cpu,cuda] [--step] [--nmse 1e-5]
//
// The first device is the reference. Without --devices: cpu,cuda when a GPU is present; on a
// machine without one, the CPU's one-forward pass against its own decode path (one token per
// forward through the KV cache), the other comparison that machine can make.
//
// NMSE = sum (b - a)^2 / sum a^2 over the whole tensor (all rows of all forward calls);
// max|d| = max |b - a|; "worst row" is the row with the largest NMSE (with its index), which
// singles out scattered garbage rows that a global average hides. "kernel" is what wrote the
// candidate's tensor: on CUDA the kernel that ran, a fused one as "gemv_group[qkv]" (the
// fusion's name in brackets), so a divergence names the fused kernel that produced it; the
// taps see the fused kernels as they run in decode (backend.h Backend::tap).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/gguf.h"
#include "runtime/kv_cache.h"
#include "runtime/tap_trace.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace {

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    QWEN_CHECK(used == item.size() && !item.empty(), "--tokens: '", item, "' is not an integer token id");
    ids.push_back(int32_t(v));
  }
  return ids;
}

qwen::TapTrace run(const std::string& device, const qwen::gguf::File& f, const std::vector<int32_t>& ids,
                   bool step, qwen::GGMLType kv_type, int n_threads) {
  auto backend = qwen::make_backend(device, n_threads);
  qwen::TapTrace trace = qwen::trace_forward(*backend, f, ids, step, kv_type);
  std::fprintf(stderr, "qwen-diff: ran %zu tokens on %s%s\n", ids.size(), backend->name().c_str(),
               step ? " one per forward" : "");
  return trace;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-diff: compare every named intermediate of two backends on the same tokens"};
  app.option_defaults()->always_capture_default();
  std::string model_path, prompt, tokens_text, devices, kv_name = "f16";
  bool step = false, color = isatty(1) != 0;
  double tol = 1e-5;
  int n_threads = 0;
  app.add_option("-m,--model", model_path, "GGUF model file")->required()->check(CLI::ExistingFile);
  auto* p_opt =
      app.add_option("-p,--prompt", prompt, "prompt text (special tokens like <|im_start|> are parsed)");
  auto* t_opt = app.add_option("--tokens", tokens_text, "comma-separated token ids, e.g. 1,2,3");
  p_opt->excludes(t_opt);
  app.add_option("--devices", devices,
                 "reference,candidate, e.g. cpu,cuda (default: cpu,cuda with a GPU; without one, cpu in one "
                 "forward vs cpu one token per forward)");
  app.add_flag("--step", step, "one token per forward through the KV cache (the decode path)");
  app.add_option("--nmse", tol, "NMSE above which a tensor is flagged");
  app.add_option("--kv-type", kv_name, "KV cache type on both sides: f32, f16, bf16 or q8_0");
  app.add_option("-t,--threads", n_threads, "CPU threads (0: all)");
  app.add_flag("--color,!--no-color", color, "colour the verdicts (default: when stdout is a terminal)");
  bool verbose = false;
  app.add_flag("--verbose", verbose, "errors also name the source location that raised them");
  CLI11_PARSE(app, argc, argv);

  try {
    // Without a GPU the candidate is the CPU's decode path (step_b), unless --step already asks
    // for it on both sides.
    bool step_b = step;
    if (devices.empty()) {
      const bool gpu = qwen::cuda_available();
      devices = gpu ? "cpu,cuda" : "cpu,cpu";
      step_b = step || !gpu;
    }
    const auto comma = devices.find(',');
    QWEN_CHECK(comma != std::string::npos, "--devices: expected two devices like cpu,cuda, got '", devices,
               "'");
    const std::string dev_a = devices.substr(0, comma), dev_b = devices.substr(comma + 1);
    QWEN_CHECK(!prompt.empty() || !tokens_text.empty(), "give --prompt TEXT or --tokens 1,2,3");
    auto file = qwen::gguf::File::open(model_path);
    std::vector<int32_t> ids =
        !tokens_text.empty()
            ? parse_ids(tokens_text)
            : qwen::Tokenizer(*file).encode(prompt, /*parse_special=*/true, /*add_special=*/true);
    QWEN_CHECK(!ids.empty(), "the input has no tokens");
    const std::optional<qwen::GGMLType> kv_type = qwen::kv_type_from_flags(kv_name, "", "");
    QWEN_CHECK(kv_type.has_value(), "--kv-type ", kv_name, ": both sides share one cache type, name it");
    const qwen::TapTrace a = run(dev_a, *file, ids, step, *kv_type, n_threads);
    const qwen::TapTrace b = run(dev_b, *file, ids, step_b, *kv_type, n_threads);

    const char* red = color ? "\033[31m" : "";
    const char* green = color ? "\033[32m" : "";
    const char* reset = color ? "\033[0m" : "";
    auto mode = [](bool s) { return s ? " (one token per forward)" : " (one forward)"; };
    std::printf("\n%s%s vs %s%s on %zu tokens, flagging NMSE > %.1e\n\n", dev_b.c_str(), mode(step_b),
                dev_a.c_str(), mode(step), ids.size(), tol);
    std::printf("  %-22s %14s %11s %11s %11s %16s   %-24s %s\n", "tensor", "shape", "NMSE", "max|d|",
                "rms(ref)", "worst row (NMSE)", ("kernel (" + dev_b + ")").c_str(), "");
    int n_bad = 0;
    for (const qwen::TapTensor& ta : a.tensors) {
      const qwen::TapTensor* pb = b.find(ta.key);
      if (pb == nullptr) {
        std::printf("  %-22s missing on %s   %sABOVE%s\n", ta.key.c_str(), dev_b.c_str(), red, reset);
        ++n_bad;
        continue;
      }
      const qwen::TapTensor& tb = *pb;
      char shape[32];
      std::snprintf(shape, sizeof shape, "%lldx%lld", static_cast<long long>(ta.data.size() / ta.cols),
                    static_cast<long long>(ta.cols));
      if (tb.data.size() != ta.data.size() || tb.cols != ta.cols) {
        std::printf("  %-22s %14s shapes differ (%zu vs %zu values)   %sABOVE%s\n", ta.key.c_str(), shape,
                    ta.data.size(), tb.data.size(), red, reset);
        ++n_bad;
        continue;
      }
      const qwen::TapDiff m = qwen::compare(ta, tb);
      const bool bad = m.diverges(tol);
      n_bad += bad;
      char worst[48];
      std::snprintf(worst, sizeof worst, "%lld (%.1e)", static_cast<long long>(m.worst_row),
                    m.worst_row_nmse);
      std::printf("  %-22s %14s %11.3e %11.3e %11.3e %16s   %-24s %s%s%s", ta.key.c_str(), shape, m.nmse,
                  m.max_abs, m.ref_rms, worst, tb.kernel.c_str(), bad ? red : green, bad ? "ABOVE" : "ok",
                  reset);
      if (m.non_finite) std::printf(" (%lld non-finite)", static_cast<long long>(m.non_finite));
      std::printf("\n");
    }
    // Greedy agreement on the logits (the last tensor): what a user would see.
    const qwen::TapTensor *la = a.find("result_output"), *lb = b.find("result_output");
    if (la != nullptr && lb != nullptr && la->data.size() == lb->data.size()) {
      const qwen::TapTensor &x = *la, &y = *lb;
      const int64_t rows = int64_t(x.data.size()) / x.cols;
      int64_t agree = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const float* px = x.data.data() + r * x.cols;
        const float* py = y.data.data() + r * y.cols;
        agree += (std::max_element(px, px + x.cols) - px) == (std::max_element(py, py + y.cols) - py);
      }
      std::printf("\n  top-1 agreement on the logits: %lld/%lld positions\n", static_cast<long long>(agree),
                  static_cast<long long>(rows));
    }
    const qwen::TapTensor* first = qwen::first_divergence(a, b, tol);
    if (first == nullptr) {
      std::printf("  %sall %zu tensors within NMSE %.1e%s\n", green, a.tensors.size(), tol, reset);
    } else {
      const qwen::TapTensor* fb = b.find(first->key);
      std::printf("  %s%d tensor(s) above NMSE %.1e; first divergence: %s (%s kernel %s)%s\n", red, n_bad,
                  tol, first->key.c_str(), dev_b.c_str(), fb ? fb->kernel.c_str() : "none", reset);
    }
    return first == nullptr ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "qwen-diff: error: " << qwen::error_text(e, verbose) << "\n";
    return 1;
  }
}
