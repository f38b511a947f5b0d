// qwen-opbench's host side, apart from the timing loop (main.cpp): the matmul shapes of the Qwen2.5
// models, the weight types, the flags and the plan they choose, the random weight generator and the
// report. Header-only so that tests/unit/test_opbench.cpp checks the same code the binary runs.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/ggml_types.h"
#include "util/check.h"

#ifdef QWEN_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace opbench {

using qwen::GGMLType;

// The attention and FFN dimensions of a Qwen2.5 model, which set its matmul shapes
// (docs/ARCHITECTURE.md, "Benchmark models").
struct ModelShape {
  const char* name;  // the --shape value
  int64_t hidden, n_head, n_head_kv, head_dim, ffn, vocab;
};

inline const std::vector<ModelShape>& model_shapes() {
  static const std::vector<ModelShape> shapes = {
      {"0.5b", 896, 14, 2, 64, 4864, 151936},
      {"7b", 3584, 28, 4, 128, 18944, 152064},
      {"14b", 5120, 40, 8, 128, 13824, 152064},
      {"32b", 5120, 40, 8, 128, 27648, 152064},
  };
  return shapes;
}

// One distinct matmul of a model: y [n][ne1] = W [ne1][ne0] x [n][ne0].
struct Matrix {
  std::string shape;  // "7b"
  std::string names;  // the GGUF matrices of this shape, "q/o" when two share it
  int64_t ne1 = 0, ne0 = 0;
};

// q, k, v, o, gate, up, down and lm_head of one model; matrices of equal (ne1, ne0) are measured
// once, under their joined names (q and o are square at head_dim * n_head == hidden, k and v are
// always equal, so are gate and up).
inline std::vector<Matrix> matrices(const ModelShape& s) {
  const int64_t q_dim = s.n_head * s.head_dim, kv_dim = s.n_head_kv * s.head_dim;
  const Matrix all[] = {
      {s.name, "q", q_dim, s.hidden},    {s.name, "k", kv_dim, s.hidden},
      {s.name, "v", kv_dim, s.hidden},   {s.name, "o", s.hidden, q_dim},
      {s.name, "gate", s.ffn, s.hidden}, {s.name, "up", s.ffn, s.hidden},
      {s.name, "down", s.hidden, s.ffn}, {s.name, "lm_head", s.vocab, s.hidden},
  };
  std::vector<Matrix> out;
  for (const Matrix& m : all) {
    auto same = std::find_if(out.begin(), out.end(),
                             [&](const Matrix& o) { return o.ne1 == m.ne1 && o.ne0 == m.ne0; });
    if (same != out.end()) {
      same->names += "/" + m.names;
    } else {
      out.push_back(m);
    }
  }
  return out;
}

// The weight types a GGUF model's matrices come in, in the report's order.
inline const std::vector<GGMLType>& bench_types() {
  static const std::vector<GGMLType> types = {
      GGMLType::F16,  GGMLType::BF16, GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0,
      GGMLType::Q5_1, GGMLType::Q2_K, GGMLType::Q3_K, GGMLType::Q4_K, GGMLType::Q5_K, GGMLType::Q6_K,
  };
  return types;
}

constexpr int kMaxTokens = 8192;  // -n bound: x and y of the lm_head stay a few GiB

struct Options {
  std::vector<std::string> shapes = {"0.5b", "7b", "14b", "32b"};
  std::vector<std::string> types;  // empty: every bench type
  std::vector<int> n_tokens = {1, 8, 64, 512};
  int reps = 10;
  double peak_gbs = 3050;    // H100 80GB HBM3 streaming reads (docs/ARCHITECTURE.md)
  double peak_tflops = 800;  // H100 dense fp16/bf16 tensor cores
  bool json = false;
  bool exact = false;  // the backend's exact arithmetic (x as two fp16 halves in the GEMMs)
};

inline void add_flags(CLI::App& app, Options& o) {
  app.add_option("--shape", o.shapes, "model shapes: 0.5b, 7b, 14b, 32b (Qwen2.5)")->delimiter(',');
  app.add_option("--type", o.types,
                 "weight types (default: F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K)")
      ->delimiter(',');
  app.add_option("-n,--n-tokens", o.n_tokens, "token counts (rows of x)")->delimiter(',');
  app.add_option("--reps", o.reps, "timed samples per row; the median is reported")
      ->check(CLI::Range(1, 100000));
  app.add_option("--peak-gbs", o.peak_gbs, "the card's memory bandwidth in GB/s (H100 SXM: 3050)")
      ->check(CLI::PositiveNumber);
  app.add_option("--peak-tflops", o.peak_tflops, "the card's dense fp16 tensor-core TFLOP/s (H100 SXM: 800)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--json", o.json, "print JSON instead of a markdown table");
  app.add_flag("--exact", o.exact,
               "time the exact arithmetic (activations as two fp16 halves in the GEMMs) instead of the apps' "
               "default");
}

// One weight to make: a matrix in one type, run at every token count of the plan.
struct Case {
  Matrix m;
  GGMLType type;
};
// A matrix whose rows a type cannot hold (its block size does not divide ne0).
struct Skip {
  Matrix m;
  GGMLType type;
};
struct Plan {
  std::vector<Case> cases;
  std::vector<Skip> skipped;
  std::vector<int> n_tokens;
};

inline std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

inline std::string joined_type_names() {
  std::string s;
  for (GGMLType t : bench_types()) s += (s.empty() ? "" : ", ") + std::string(qwen::type_name(t));
  return s;
}

// Checks the options and lists the cases: shapes, then matrices, then types, in the order given.
// Throws qwen::Error naming the flag and the value.
inline Plan make_plan(const Options& o) {
  QWEN_CHECK(!o.shapes.empty() && !o.n_tokens.empty(), "--shape and -n need at least one value");
  std::vector<const ModelShape*> shapes;
  for (const std::string& name : o.shapes) {
    auto it = std::find_if(model_shapes().begin(), model_shapes().end(),
                           [&](const ModelShape& s) { return lower(name) == s.name; });
    QWEN_CHECK(it != model_shapes().end(), "--shape '", name, "': unknown (expected 0.5b, 7b, 14b or 32b)");
    QWEN_CHECK(std::find(shapes.begin(), shapes.end(), &*it) == shapes.end(), "--shape '", name,
               "' given twice");
    shapes.push_back(&*it);
  }
  std::vector<GGMLType> types;
  for (const std::string& name : o.types) {
    GGMLType t;
    try {
      t = qwen::parse_type(name);
    } catch (const qwen::Error& e) {
      QWEN_FAIL("--type '", name, "': ", e.what());
    }
    QWEN_CHECK(std::find(bench_types().begin(), bench_types().end(), t) != bench_types().end(), "--type '",
               name, "': not a benchmarked weight type (expected one of ", joined_type_names(), ")");
    QWEN_CHECK(std::find(types.begin(), types.end(), t) == types.end(), "--type '", name, "' given twice");
    types.push_back(t);
  }
  if (types.empty()) types = bench_types();
  Plan plan;
  for (int n : o.n_tokens) {
    QWEN_CHECK(n >= 1 && n <= kMaxTokens, "-n ", n, ": token counts must be 1..", kMaxTokens);
    QWEN_CHECK(std::find(plan.n_tokens.begin(), plan.n_tokens.end(), n) == plan.n_tokens.end(), "-n ", n,
               " given twice");
    plan.n_tokens.push_back(n);
  }
  for (const ModelShape* s : shapes) {
    for (const Matrix& m : matrices(*s)) {
      for (GGMLType t : types) {
        if (m.ne0 % qwen::type_traits(t).block_size == 0) {
          plan.cases.push_back({m, t});
        } else {
          plan.skipped.push_back({m, t});
        }
      }
    }
  }
  return plan;
}

// ---- random weights ---------------------------------------------------------------------------

// splitmix64: a fast, well-mixed 64-bit stream; the weights only need to be valid, not good random.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

// Byte offsets of the fp16 fields (d, and dmin or m) inside a block of ggml's layout; -1: none.
struct HalfFields {
  int d = -1, m = -1;
};
inline HalfFields half_fields(GGMLType t) {
  switch (t) {
    case GGMLType::Q4_0:
    case GGMLType::Q5_0:
    case GGMLType::Q8_0:
      return {0, -1};
    case GGMLType::Q4_1:
    case GGMLType::Q5_1:
    case GGMLType::Q4_K:
    case GGMLType::Q5_K:
      return {0, 2};
    case GGMLType::Q2_K:
      return {80, 82};
    case GGMLType::Q3_K:
      return {108, -1};
    case GGMLType::Q6_K:
      return {208, -1};
    default:
      QWEN_FAIL("opbench: no random block layout for type ", qwen::type_name(t));
  }
}

inline void set_u16(uint8_t* p, uint16_t v) {
  std::memcpy(p, &v, 2);
}
inline uint16_t get_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// W [ne1][ne0] of type t, random but valid: every byte random, then every float field given a
// random sign and mantissa under a fixed exponent, so no Inf or NaN can occur and values stay
// small. F16/BF16 elements lie in ±[1/16, 1/8); block scales (d, dmin, m) in ±[1/256, 1/128), so
// a quantized element is at most |d| * 4-bit scale 63 * 5-bit code 31 + |dmin| * 63 < 16 (Q5_K),
// or 32 for Q6_K's signed 8-bit scales.
inline std::vector<uint8_t> random_weight(GGMLType t, int64_t ne1, int64_t ne0, uint64_t seed) {
  QWEN_CHECK(ne0 % qwen::type_traits(t).block_size == 0, "opbench: ", qwen::type_name(t),
             " rows need a multiple of ", qwen::type_traits(t).block_size, " elements, got ", ne0);
  Rng rng{seed};
  std::vector<uint8_t> w(qwen::row_bytes(t, ne0) * size_t(ne1));
  size_t i = 0;
  for (; i + 8 <= w.size(); i += 8) {
    const uint64_t r = rng.next();
    std::memcpy(&w[i], &r, 8);
  }
  for (const uint64_t r = rng.next(); i < w.size(); ++i) w[i] = uint8_t(r >> (8 * (i % 8)));

  constexpr uint16_t kHalfElem = 11 << 10, kHalfScale = 7 << 10;  // fp16 exponents of 2^-4, 2^-8
  constexpr uint16_t kBf16Elem = 123 << 7;                        // bf16 exponent of 2^-4
  if (t == GGMLType::F16 || t == GGMLType::BF16) {
    const uint16_t keep = t == GGMLType::F16 ? 0x83FF : 0x807F;  // sign and mantissa
    const uint16_t exp = t == GGMLType::F16 ? kHalfElem : kBf16Elem;
    for (size_t j = 0; j + 2 <= w.size(); j += 2) set_u16(&w[j], uint16_t((get_u16(&w[j]) & keep) | exp));
    return w;
  }
  const HalfFields f = half_fields(t);
  const size_t block_bytes = qwen::type_traits(t).block_bytes;
  for (size_t b = 0; b < w.size(); b += block_bytes) {
    for (int off : {f.d, f.m}) {
      if (off >= 0)
        set_u16(&w[b + size_t(off)], uint16_t((get_u16(&w[b + size_t(off)]) & 0x83FF) | kHalfScale));
    }
  }
  return w;
}

// ---- the device -------------------------------------------------------------------------------

// The L2 size of CUDA device 0, which the weight rotation must exceed; throws "no CUDA device"
// in a build without CUDA or on a machine without a GPU (qwen-opbench times CUDA kernels only).
inline size_t cuda_l2_bytes() {
#ifdef QWEN_HAVE_CUDA
  QWEN_CHECK(qwen::cuda_device_count() > 0,
             "no CUDA device: the CUDA driver reports no GPU on this machine "
             "(qwen-opbench times the CUDA kernels only)");
  int l2 = 0;
  const cudaError_t e = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
  QWEN_CHECK(e == cudaSuccess, "cudaDeviceGetAttribute(L2 cache size): ", cudaGetErrorString(e));
  return size_t(l2);
#else
  QWEN_FAIL(
      "no CUDA device: this build has no CUDA backend (configure with -DQWEN_CUDA=ON; "
      "qwen-opbench times the CUDA kernels only)");
#endif
}

// ---- the report -------------------------------------------------------------------------------

struct Result {
  Matrix m;
  GGMLType type;
  int n_tokens = 0;
  double seconds = 0;  // median time of one matmul
};
struct Limits {
  double peak_gbs, peak_tflops;
};

// Bytes a matmul must move: the weight once, x read and y written in fp32.
inline double bytes_moved(const Result& r) {
  return double(qwen::row_bytes(r.type, r.m.ne0)) * double(r.m.ne1) +
         4.0 * double(r.n_tokens) * double(r.m.ne0 + r.m.ne1);
}
inline double flops(const Result& r) {
  return 2.0 * double(r.m.ne0) * double(r.m.ne1) * r.n_tokens;
}

inline std::string markdown_header() {
  return "| shape | matrix | ne1 x ne0 | type | n | µs | GB/s | % of GB/s | TFLOP/s | % of TFLOP/s |\n"
         "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n";
}

inline std::string markdown_row(const Result& r, const Limits& l) {
  const double gbs = bytes_moved(r) / r.seconds * 1e-9, tflops = flops(r) / r.seconds * 1e-12;
  char buf[256];
  std::snprintf(buf, sizeof buf, "| %s | %s | %lld x %lld | %s | %d | %.2f | %.0f | %.1f | %.2f | %.1f |\n",
                r.m.shape.c_str(), r.m.names.c_str(), static_cast<long long>(r.m.ne1),
                static_cast<long long>(r.m.ne0), qwen::type_name(r.type), r.n_tokens, r.seconds * 1e6, gbs,
                100 * gbs / l.peak_gbs, tflops, 100 * tflops / l.peak_tflops);
  return buf;
}

inline nlohmann::json json_row(const Result& r, const Limits& l) {
  const double gbs = bytes_moved(r) / r.seconds * 1e-9, tflops = flops(r) / r.seconds * 1e-12;
  return {{"shape", r.m.shape},
          {"matrix", r.m.names},
          {"ne1", r.m.ne1},
          {"ne0", r.m.ne0},
          {"type", qwen::type_name(r.type)},
          {"n_tokens", r.n_tokens},
          {"us", r.seconds * 1e6},
          {"bytes", bytes_moved(r)},
          {"gbs", gbs},
          {"gbs_pct", 100 * gbs / l.peak_gbs},
          {"flops", flops(r)},
          {"tflops", tflops},
          {"tflops_pct", 100 * tflops / l.peak_tflops}};
}

// One line per matrix: the types its row length excludes.
inline std::vector<std::string> skip_lines(const std::vector<Skip>& skipped) {
  std::vector<std::string> lines;
  for (size_t i = 0; i < skipped.size();) {
    const Matrix& m = skipped[i].m;
    std::string types;
    for (; i < skipped.size() && skipped[i].m.shape == m.shape && skipped[i].m.names == m.names; ++i) {
      const GGMLType t = skipped[i].type;
      types += qwen::str(types.empty() ? "" : ", ", qwen::type_name(t), " (", qwen::type_traits(t).block_size,
                         ")");
    }
    lines.push_back(qwen::str("skipped ", m.shape, " ", m.names, " (", m.ne1, " x ", m.ne0,
                              "): ne0 = ", m.ne0, " is no multiple of the block size of ", types));
  }
  return lines;
}

}  // namespace opbench
