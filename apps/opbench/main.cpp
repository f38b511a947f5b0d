// qwen-opbench: the CUDA matmul kernels alone, one op at a time, against the card's limits (the
// idea of ggml's test-backend-ops perf mode and llm.c's dev/cuda). For every distinct matmul of the
// Qwen2.5 0.5B, 7B, 14B and 32B shapes, every weight type and every token count it times
// Backend::matmul, the call the model's forward makes, so each row runs the path the engine takes
// for that token count (GEMV up to 4 tokens, gemm_small up to 64, cuBLAS above; docs/ARCHITECTURE.md,
// "CUDA backend"). It reports µs, GB/s (weight + x + y bytes / time) and TFLOP/s (2 ne0 ne1 n / time),
// each with its percentage of --peak-gbs and --peak-tflops: the distance to the roofline.
//
// Timing. The weight is random but valid (opbench.h). When it is smaller than twice the L2, copies
// of it are made and the matmuls cycle through them, so every copy has left the L2 before it is read
// again; x and y stay put, as in the model, where the previous op has just written x. After an eager
// pass over every copy (cuBLAS chooses its algorithm, the backend grows its prefill scratch: neither
// may happen inside a capture), a CUDA graph of at least kMinGraphOps matmuls over the copies is
// captured and replayed back to back, as the engine runs decode, so host launch cost stays out of
// the kernels' time. A sample is the host time of enough replays to last kSampleSeconds, ended by one
// synchronize, divided by the matmuls it ran; a row reports the median of --reps samples. The host
// clock, not CUDA events, because the backend's stream is its own (backend.h exposes none); the
// first replay's launch and the final synchronize (tens of µs) add under 1% to a 5 ms sample.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <vector>

#include "backend/backend.h"
#include "opbench.h"

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMinGraphOps = 16;
constexpr double kSampleSeconds = 5e-3;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// Median seconds of one matmul(y, copies[i], x, n) (see the file comment).
double time_matmul(qwen::Backend& be, const std::vector<qwen::Weight>& copies, float* y, const float* x,
                   int n, int reps) {
  for (const qwen::Weight& w : copies) be.matmul(y, w, x, n, nullptr);
  be.synchronize();
  const size_t n_copies = copies.size();
  const size_t per_graph = n_copies * ((kMinGraphOps + n_copies - 1) / n_copies);
  be.begin_capture(0);
  for (size_t i = 0; i < per_graph; ++i) be.matmul(y, copies[i % n_copies], x, n, nullptr);
  be.end_capture();
  be.replay(0);  // the first launch of a graph also uploads it
  be.synchronize();
  Clock::time_point t0 = Clock::now();
  be.replay(0);
  be.synchronize();
  const int replays = std::max(1, int(std::ceil(kSampleSeconds / seconds_since(t0))));
  std::vector<double> samples;
  for (int r = 0; r < reps; ++r) {
    t0 = Clock::now();
    for (int i = 0; i < replays; ++i) be.replay(0);
    be.synchronize();
    samples.push_back(seconds_since(t0) / (double(replays) * double(per_graph)));
  }
  return median(samples);
}

std::vector<float> random_activations(size_t n, uint64_t seed) {
  opbench::Rng rng{seed};
  std::vector<float> x(n);
  for (float& v : x) v = float(double(rng.next() >> 11) * 0x1p-52 - 1.0);  // uniform in [-1, 1)
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-opbench: per-op timing of the CUDA matmul kernels on the Qwen2.5 matrix shapes"};
  opbench::Options opt;
  opbench::add_flags(app, opt);
  CLI11_PARSE(app, argc, argv);

  try {
    const opbench::Plan plan = opbench::make_plan(opt);
    const size_t l2 = opbench::cuda_l2_bytes();
    auto backend = qwen::make_backend("cuda", 0, opt.exact);
    qwen::Backend& be = *backend;
    const opbench::Limits limits{opt.peak_gbs, opt.peak_tflops};
    const int max_n = *std::max_element(plan.n_tokens.begin(), plan.n_tokens.end());
    if (!opt.json) {
      std::printf(
          "device: %s, L2 %zu MiB\nlimits: %.0f GB/s (--peak-gbs), %.0f TFLOP/s (--peak-tflops); each row "
          "the median of %d samples of %.0f ms of CUDA graph replays\n\n%s",
          be.name().c_str(), l2 >> 20, opt.peak_gbs, opt.peak_tflops, opt.reps, kSampleSeconds * 1e3,
          opbench::markdown_header().c_str());
      std::fflush(stdout);
    }
    nlohmann::json rows = nlohmann::json::array();
    for (size_t c = 0; c < plan.cases.size(); ++c) {
      const opbench::Case& k = plan.cases[c];
      const std::vector<uint8_t> host = opbench::random_weight(k.type, k.m.ne1, k.m.ne0, 2 * c + 1);
      const size_t stride = (host.size() + 255) / 256 * 256;  // keeps every copy 256-byte aligned
      const size_t n_copies = host.size() >= 2 * l2 ? 1 : (2 * l2 + host.size() - 1) / host.size();
      auto* arena = static_cast<uint8_t*>(be.alloc(stride * n_copies));
      std::vector<qwen::Weight> copies;
      for (size_t i = 0; i < n_copies; ++i) {
        be.upload(arena + i * stride, host.data(), host.size());
        copies.push_back(qwen::Weight{k.type, k.m.ne0, k.m.ne1, arena + i * stride});
      }
      const std::vector<float> xh = random_activations(size_t(max_n) * size_t(k.m.ne0), 2 * c + 2);
      auto* x = static_cast<float*>(be.alloc(xh.size() * sizeof(float)));
      be.upload(x, xh.data(), xh.size() * sizeof(float));
      auto* y = static_cast<float*>(be.alloc(size_t(max_n) * size_t(k.m.ne1) * sizeof(float)));
      for (int n : plan.n_tokens) {
        const opbench::Result r{k.m, k.type, n, time_matmul(be, copies, y, x, n, opt.reps)};
        if (opt.json) {
          rows.push_back(opbench::json_row(r, limits));
        } else {
          std::fputs(opbench::markdown_row(r, limits).c_str(), stdout);
          std::fflush(stdout);
        }
      }
      be.free(y);
      be.free(x);
      be.free(arena);
    }
    const std::vector<std::string> skipped = opbench::skip_lines(plan.skipped);
    if (opt.json) {
      const nlohmann::json out = {{"device", be.name()},      {"l2_bytes", l2},
                                  {"peak_gbs", opt.peak_gbs}, {"peak_tflops", opt.peak_tflops},
                                  {"reps", opt.reps},         {"rows", rows},
                                  {"skipped", skipped}};
      std::cout << out.dump(1) << "\n";
    } else {
      if (!skipped.empty()) std::printf("\n");
      for (const std::string& s : skipped) std::printf("%s\n", s.c_str());
    }
  } catch (const std::exception& e) {
    std::cerr << "qwen-opbench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
