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
// singles out scattered garbage rows that a global average hides.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "runtime/kv_cache.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace {

struct Tensor {
  std::string key;  // "L03.attn_norm" or "result_output"
  int64_t cols = 0;
  std::vector<float> data;  // rows of every forward call, appended
};

// Everything one backend produced, in forward order of first appearance.
struct Trace {
  std::vector<Tensor> tensors;
  std::map<std::string, size_t> index;
};

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

Trace run(const std::string& device, const qwen::gguf::File& f, const std::vector<int32_t>& ids, bool step,
          qwen::GGMLType kv_type, int n_threads) {
  auto backend = qwen::make_backend(device, n_threads);
  qwen::Backend& be = *backend;
  const int n = int(ids.size());
  const int batch = step ? 1 : n;
  qwen::Model model(f, be, batch);
  QWEN_CHECK(*std::max_element(ids.begin(), ids.end()) < model.config().n_vocab &&
                 *std::min_element(ids.begin(), ids.end()) >= 0,
             "a token id is outside the vocabulary of ", model.config().n_vocab);
  qwen::KVCache kv(be, model.config(), 1, n, kv_type);
  std::vector<int32_t> pos(n), seq(n, 0), rows(n);
  for (int i = 0; i < n; ++i) pos[i] = i, rows[i] = i;
  auto* ids_d = static_cast<int32_t*>(be.alloc(n * 4));
  auto* pos_d = static_cast<int32_t*>(be.alloc(n * 4));
  auto* seq_d = static_cast<int32_t*>(be.alloc(n * 4));
  auto* rows_d = static_cast<int32_t*>(be.alloc(n * 4));
  auto* logits_d = static_cast<float*>(be.alloc(size_t(batch) * model.config().n_vocab * 4));
  be.upload(ids_d, ids.data(), n * 4);
  be.upload(pos_d, pos.data(), n * 4);
  be.upload(seq_d, seq.data(), n * 4);
  be.upload(rows_d, rows.data(), n * 4);
  Trace trace;
  auto tap = [&](const std::string& name, int layer, const float* data, int64_t r, int64_t c) {
    char key[96];
    if (layer >= 0) {
      std::snprintf(key, sizeof key, "L%02d.%s", layer, name.c_str());
    } else {
      std::snprintf(key, sizeof key, "%s", name.c_str());
    }
    auto it = trace.index.find(key);
    if (it == trace.index.end()) {
      it = trace.index.emplace(key, trace.tensors.size()).first;
      trace.tensors.push_back({key, c, {}});
    }
    Tensor& t = trace.tensors[it->second];
    const size_t old = t.data.size();
    t.data.resize(old + size_t(r * c));
    be.download(t.data.data() + old, data, size_t(r * c) * sizeof(float));
  };
  for (int start = 0; start < n; start += batch) {
    const qwen::Batch b{batch, ids_d + start, pos_d + start, seq_d + start};
    model.forward(b, kv.layers(), rows_d, batch, logits_d, tap);
  }
  for (void* p : {static_cast<void*>(ids_d), static_cast<void*>(pos_d), static_cast<void*>(seq_d),
                  static_cast<void*>(rows_d), static_cast<void*>(logits_d)})
    be.free(p);
  std::fprintf(stderr, "qwen-diff: ran %d tokens on %s%s\n", n, be.name().c_str(),
               step ? " one per forward" : "");
  return trace;
}

struct Metrics {
  double nmse = 0, max_abs = 0, ref_rms = 0, worst_row_nmse = 0;
  int64_t worst_row = -1, non_finite = 0;
};

Metrics compare(const Tensor& a, const Tensor& b) {
  Metrics m;
  const int64_t n = int64_t(a.data.size()), rows = n / a.cols;
  double num = 0, den = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double rn = 0, rd = 0;
    for (int64_t i = r * a.cols; i < (r + 1) * a.cols; ++i) {
      const double x = a.data[i], y = b.data[i];
      if (!std::isfinite(x) || !std::isfinite(y)) {
        ++m.non_finite;
        continue;
      }
      rn += (y - x) * (y - x);
      rd += x * x;
      m.max_abs = std::max(m.max_abs, std::abs(y - x));
    }
    num += rn, den += rd;
    const double row_nmse = rd > 0 ? rn / rd : rn;
    if (row_nmse > m.worst_row_nmse || m.worst_row < 0) m.worst_row_nmse = row_nmse, m.worst_row = r;
  }
  m.nmse = den > 0 ? num / den : num;
  m.ref_rms = std::sqrt(den / double(std::max<int64_t>(1, n)));
  return m;
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
    const Trace a = run(dev_a, *file, ids, step, *kv_type, n_threads);
    const Trace b = run(dev_b, *file, ids, step_b, *kv_type, n_threads);

    const char* red = color ? "\033[31m" : "";
    const char* green = color ? "\033[32m" : "";
    const char* reset = color ? "\033[0m" : "";
    auto mode = [](bool s) { return s ? " (one token per forward)" : " (one forward)"; };
    std::printf("\n%s%s vs %s%s on %zu tokens, flagging NMSE > %.1e\n\n", dev_b.c_str(), mode(step_b),
                dev_a.c_str(), mode(step), ids.size(), tol);
    std::printf("  %-22s %14s %11s %11s %11s %16s   %s\n", "tensor", "shape", "NMSE", "max|d|", "rms(ref)",
                "worst row (NMSE)", "");
    std::string first_bad;
    int n_bad = 0;
    for (const Tensor& ta : a.tensors) {
      auto it = b.index.find(ta.key);
      if (it == b.index.end()) {
        std::printf("  %-22s missing on %s\n", ta.key.c_str(), dev_b.c_str());
        continue;
      }
      const Tensor& tb = b.tensors[it->second];
      char shape[32];
      std::snprintf(shape, sizeof shape, "%lldx%lld", static_cast<long long>(ta.data.size() / ta.cols),
                    static_cast<long long>(ta.cols));
      if (tb.data.size() != ta.data.size()) {
        std::printf("  %-22s %14s shapes differ (%zu vs %zu values)\n", ta.key.c_str(), shape, ta.data.size(),
                    tb.data.size());
        continue;
      }
      const Metrics m = compare(ta, tb);
      const bool bad = m.non_finite > 0 || !(m.nmse <= tol);
      if (bad && first_bad.empty()) first_bad = ta.key;
      n_bad += bad;
      char worst[48];
      std::snprintf(worst, sizeof worst, "%lld (%.1e)", static_cast<long long>(m.worst_row),
                    m.worst_row_nmse);
      std::printf("  %-22s %14s %11.3e %11.3e %11.3e %16s   %s%s%s", ta.key.c_str(), shape, m.nmse, m.max_abs,
                  m.ref_rms, worst, bad ? red : green, bad ? "ABOVE" : "ok", reset);
      if (m.non_finite) std::printf(" (%lld non-finite)", static_cast<long long>(m.non_finite));
      std::printf("\n");
    }
    // Greedy agreement on the logits (the last tensor): what a user would see.
    auto la = a.index.find("result_output"), lb = b.index.find("result_output");
    if (la != a.index.end() && lb != b.index.end()) {
      const Tensor &x = a.tensors[la->second], &y = b.tensors[lb->second];
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
    if (first_bad.empty()) {
      std::printf("  %sall %zu tensors within NMSE %.1e%s\n", green, a.tensors.size(), tol, reset);
    } else {
      std::printf("  %s%d tensor(s) above NMSE %.1e; first divergence: %s%s\n", red, n_bad, tol,
                  first_bad.c_str(), reset);
    }
    return first_bad.empty() ? 0 : 2;
  } catch (const std::exception& e) {
    std::cerr << "qwen-diff: error: " << qwen::error_text(e, verbose) << "\n";
    return 1;
  }
}
