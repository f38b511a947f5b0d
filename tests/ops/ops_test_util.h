// Helpers for the CUDA-vs-CPU parity tests: a backend pair, mirrored buffers, random weights of
// every GGUF type, and the metrics every test states (NMSE, max-abs).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "backend/backend.h"
#include "backend/cuda/unit_dot_types.h"
#include "gguf/ggml_types.h"
#include "util/half.h"

namespace qwen::test {

// Skips the test (visibly, with the reason) when this build or machine has no usable GPU.
#define QWEN_REQUIRE_GPU()                                                \
  do {                                                                    \
    if (::qwen::cuda_device_count() == 0)                                 \
      GTEST_SKIP() << "no CUDA GPU on this machine: CUDA parity not run"; \
  } while (0)

// gpu_exact false: the CUDA backend's fast arithmetic (one fp16 pass in prefill GEMMs, flash
// attention), as the apps run it.
struct Pair {
  explicit Pair(const CudaOptions& gpu_options = {}) : gpu(make_cuda_backend(0, gpu_options)) {}
  explicit Pair(bool gpu_exact) : Pair(CudaOptions{gpu_exact, {}}) {}
  std::unique_ptr<Backend> cpu = make_cpu_backend(0);
  std::unique_ptr<Backend> gpu;
};

// One logical buffer held by both backends (same bytes uploaded to each).
class Mirror {
 public:
  Mirror(Pair& be, size_t bytes) : be_(be), bytes_(bytes) {
    c_ = be.cpu->alloc(bytes);
    g_ = be.gpu->alloc(bytes);
  }
  template <class T>
  Mirror(Pair& be, const std::vector<T>& host) : Mirror(be, host.size() * sizeof(T)) {
    upload(host.data());
  }
  ~Mirror() {
    be_.cpu->free(c_);
    be_.gpu->free(g_);
  }
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;
  void upload(const void* src) {
    be_.cpu->upload(c_, src, bytes_);
    be_.gpu->upload(g_, src, bytes_);
  }
  template <class T>
  T* cpu() const {
    return static_cast<T*>(c_);
  }
  template <class T>
  T* gpu() const {
    return static_cast<T*>(g_);
  }
  template <class T>
  std::vector<T> cpu_host() const {
    std::vector<T> v(bytes_ / sizeof(T));
    be_.cpu->download(v.data(), c_, bytes_);
    return v;
  }
  template <class T>
  std::vector<T> gpu_host() const {
    std::vector<T> v(bytes_ / sizeof(T));
    be_.gpu->download(v.data(), g_, bytes_);
    return v;
  }

 private:
  Pair& be_;
  size_t bytes_;
  void* c_ = nullptr;
  void* g_ = nullptr;
};

inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Random bytes of a [rows][cols] weight of type t. Quantized blocks are random except their fp16
// scales (set to +-[0.5, 1] * scale so every block is finite); float types hold N(0, scale).
inline std::vector<uint8_t> random_weight(std::mt19937& rng, GGMLType t, int64_t rows, int64_t cols,
                                          float scale = 0.02f) {
  const size_t n_bytes = row_bytes(t, cols) * size_t(rows);
  std::vector<uint8_t> w(n_bytes);
  std::normal_distribution<float> nd(0.f, scale);
  if (t == GGMLType::F32 || t == GGMLType::F16 || t == GGMLType::BF16) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      const float x = nd(rng);
      if (t == GGMLType::F32) {
        std::memcpy(&w[4 * i], &x, 4);
      } else {
        const uint16_t h = t == GGMLType::F16 ? f32_to_fp16(x) : f32_to_bf16(x);
        std::memcpy(&w[2 * i], &h, 2);
      }
    }
    return w;
  }
  for (auto& b : w) b = uint8_t(rng());
  // (byte offsets of d and of dmin inside a block; -1 when absent)
  int d_off = 0, m_off = -1;
  switch (t) {
    case GGMLType::Q4_1:
    case GGMLType::Q5_1:
      m_off = 2;
      break;
    case GGMLType::Q4_0:
    case GGMLType::Q5_0:
    case GGMLType::Q8_0:
      break;
    case GGMLType::Q2_K:
      d_off = 80, m_off = 82;
      break;
    case GGMLType::Q3_K:
      d_off = 108;
      break;
    case GGMLType::Q4_K:
    case GGMLType::Q5_K:
      m_off = 2;
      break;
    case GGMLType::Q6_K:
      d_off = 208;
      break;
    default:
      ADD_FAILURE() << "random_weight: no generator for " << type_name(t);
  }
  const TypeTraits& tt = type_traits(t);
  // Scales sized so the dequantized values are O(scale) for each type's integer range.
  const float qmax = tt.block_size == 256 ? 32.f * 16.f : 16.f;
  std::uniform_real_distribution<float> ud(0.5f, 1.f);
  for (size_t b = 0; b + tt.block_bytes <= n_bytes; b += tt.block_bytes) {
    const uint16_t d = f32_to_fp16((rng() & 1 ? 1.f : -1.f) * ud(rng) * scale * 4.f / qmax);
    std::memcpy(&w[b + d_off], &d, 2);
    if (m_off >= 0) {
      const uint16_t m = f32_to_fp16(ud(rng) * scale);
      std::memcpy(&w[b + m_off], &m, 2);
    }
  }
  return w;
}

struct Diff {
  double nmse = 0;     // sum (a - ref)^2 / sum ref^2
  double max_abs = 0;  // max |a - ref|
  double ref_max = 0;  // max |ref|
  int64_t n_nonfinite = 0;
};

inline Diff compare(const float* a, const float* ref, size_t n) {
  Diff d;
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(ref[i])) {
      ++d.n_nonfinite;
      continue;
    }
    const double e = double(a[i]) - double(ref[i]);
    num += e * e;
    den += double(ref[i]) * ref[i];
    d.max_abs = std::max(d.max_abs, std::abs(e));
    d.ref_max = std::max(d.ref_max, std::abs(double(ref[i])));
  }
  d.nmse = den > 0 ? num / den : num;
  return d;
}

inline std::string describe(const Diff& d) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "nmse %.3e, max|d| %.3e (max|ref| %.3e), non-finite %lld", d.nmse, d.max_abs,
                d.ref_max, static_cast<long long>(d.n_nonfinite));
  return buf;
}

// A tiny synthetic model (scripts/make_model.py: n_embd 256, 2 layers, 4:2 heads of 64, n_ff
// 512, vocab 512) of `arch` with weights of type t in the test's temp dir; returns its path and
// records a failure when the maker fails. `flags` are more make_model.py flags (rope scaling), and
// `tag` names that variant in the file name.
inline std::string make_model(const char* arch, GGMLType t, const std::string& flags = "",
                              const std::string& tag = "") {
  const std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "qwen_ops_models";
  std::filesystem::create_directories(dir);
  const std::string path =
      (dir / (std::string(arch) + "-" + type_name(t) + (tag.empty() ? "" : "-" + tag) + ".gguf")).string();
  // Tests may run in parallel processes: each writes its own file and renames it into place
  // (the content is the same, the rename atomic).
  const std::string tmp = path + "." + std::to_string(::getpid());
  const std::string cmd = std::string("python3 ") + QWEN_SOURCE_DIR + "/scripts/make_model.py --arch " +
                          arch + " --type " + type_name(t) + " --seed 5 " + flags + " -o " + tmp +
                          " > /dev/null";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    ADD_FAILURE() << "model maker failed (" << rc << "): " << cmd;
  } else {
    std::filesystem::rename(tmp, path);
  }
  return path;
}

}  // namespace qwen::test
