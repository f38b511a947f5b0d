// The CPU reference backend: plain fp32 ops, one obviously-right loop each, split over a thread
// pool. It is the oracle the CUDA backend is compared against, so clarity wins over speed; the
// one concession is matmul over many tokens, which dequantizes each weight row once per call
// instead of once per token. Outside exact mode (the default for users, not for tests), matmuls
// of quantized weights take the integer path of matmul_q8.h instead.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/matmul_q8.h"
#include "util/thread_pool.h"
#include "gguf/quantize.h"
#include "util/check.h"

namespace qwen {

namespace {

// Below this many tokens matmul uses vec_dot on the quantized row directly.
constexpr int kDequantRowMinTokens = 4;

// fp32 dot product with kLanes independent partial sums: enough independent adds to hide the
// add latency once vectorized (no -ffast-math needed), and a fixed summation order, so results do
// not depend on the thread count. Built for AVX2 too, picked at load time on CPUs that have it;
// ISO C++ mode never contracts to FMA, so both versions give the same bits.
constexpr int kLanes = 32;
#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
float dot_f32(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (; i < n; ++i) acc[i % kLanes] += a[i] * b[i];
  for (int w = kLanes / 2; w >= 1; w /= 2) {
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  }
  return acc[0];
}

// Row (seq, pos) of a cache: n_head_kv * head_dim elements in the cache type. Head h starts
// h * row_bytes(type, head_dim) bytes in: a head is a whole number of blocks (KVCache checks).
uint8_t* kv_row(const KVLayer& c, void* base, int seq, int pos) {
  const size_t rb = row_bytes(c.type, int64_t(c.n_head_kv) * c.head_dim);
  return static_cast<uint8_t*>(base) + (size_t(seq) * c.n_ctx + pos) * rb;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int n_threads, bool exact) : pool_(n_threads), exact_(exact) {}

  DeviceKind kind() const override { return DeviceKind::CPU; }
  std::string name() const override {
    return str("cpu (", pool_.size(), " threads, ", exact_ ? "exact" : str("fast ", fast_.isa()), ")");
  }

  void* alloc(size_t bytes) override {
    void* p = std::aligned_alloc(64, std::max<size_t>(64, (bytes + 63) / 64 * 64));
    QWEN_CHECK(p != nullptr, "cpu backend: cannot allocate ", bytes, " bytes of host memory");
    return p;
  }
  void free(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void synchronize() override {}
  size_t free_bytes() const override { return std::numeric_limits<size_t>::max(); }

  void embed(float* out, const Weight& table, const int32_t* ids, int n_tokens) override {
    pool_.parallel_for(n_tokens, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        QWEN_ASSERT(ids[t] >= 0 && ids[t] < table.ne1);
        const auto* row = static_cast<const uint8_t*>(table.data) + size_t(ids[t]) * table.row_bytes();
        dequantize_row(table.type, row, out + t * table.ne0, table.ne0);
      }
    });
  }

  void rmsnorm(float* out, const float* x, const float* w, int64_t n_rows, int n, float eps) override {
    pool_.parallel_for(n_rows, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const float* xr = x + r * n;
        double ss = 0.0;
        for (int i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
        const float scale = float(1.0 / std::sqrt(ss / n + eps));
        float* o = out + r * n;
        for (int i = 0; i < n; ++i) o[i] = xr[i] * scale * w[i];
      }
    });
  }

  void matmul(float* y, const Weight& w, const float* x, int n_tokens, const float* bias) override {
    if (!exact_ && fast_.run(pool_, y, w, x, n_tokens, bias)) return;
    const int64_t k = w.ne0, m = w.ne1;
    const size_t rb = w.row_bytes();
    const auto* base = static_cast<const uint8_t*>(w.data);
    if (n_tokens < kDequantRowMinTokens) {
      const VecDotFn dot = vec_dot_fn(w.type);
      pool_.parallel_for(m, [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          const float add = bias ? bias[o] : 0.f;
          for (int t = 0; t < n_tokens; ++t) y[t * m + o] = dot(base + o * rb, x + t * k, k) + add;
        }
      });
      return;
    }
    const DequantizeRowFn dequantize = dequantize_row_fn(w.type);
    pool_.parallel_for(m, [&](int64_t b, int64_t e) {
      std::vector<float> row(k);
      for (int64_t o = b; o < e; ++o) {
        dequantize(base + o * rb, row.data(), k);
        const float add = bias ? bias[o] : 0.f;
        for (int t = 0; t < n_tokens; ++t) y[t * m + o] = dot_f32(row.data(), x + t * k, k) + add;
      }
    });
  }

  void rope(float* x, const int32_t* pos, int n_tokens, int n_head, int head_dim,
            const RopeParams& r) override {
    const int half = head_dim / 2;
    pool_.parallel_for(n_tokens, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        for (int i = 0; i < half; ++i) {
          const double theta = double(pos[t]) * double(r.inv_freq[i]);
          const float cs = float(std::cos(theta)) * r.mscale, sn = float(std::sin(theta)) * r.mscale;
          for (int h = 0; h < n_head; ++h) {
            float* v = x + (t * n_head + h) * head_dim;
            const int i0 = r.mode == RopeMode::Neox ? i : 2 * i;
            const int i1 = r.mode == RopeMode::Neox ? i + half : 2 * i + 1;
            const float a = v[i0], c = v[i1];
            v[i0] = a * cs - c * sn;
            v[i1] = a * sn + c * cs;
          }
        }
      }
    });
  }

  void kv_store(KVLayer& cache, const float* k, const float* v, const Batch& batch) override {
    const int width = cache.n_head_kv * cache.head_dim;
    for (int t = 0; t < batch.n_tokens; ++t) {
      const int s = batch.seq[t], p = batch.pos[t];
      QWEN_ASSERT(s >= 0 && s < cache.n_seq && p >= 0 && p < cache.n_ctx);
      // gguf's quantizer: the cache holds exactly what a GGUF tensor of that type would.
      quantize_row(cache.type, k + size_t(t) * width, kv_row(cache, cache.k, s, p), width);
      quantize_row(cache.type, v + size_t(t) * width, kv_row(cache, cache.v, s, p), width);
    }
  }

  void attention(float* out, const float* q, const KVLayer& cache, const Batch& batch,
                 const AttentionParams& p) override {
    const int d = p.head_dim, group = p.n_head / p.n_head_kv;
    const bool f32 = cache.type == GGMLType::F32;
    const DequantizeRowFn dequantize = dequantize_row_fn(cache.type);
    const size_t head_bytes = row_bytes(cache.type, d);
    pool_.parallel_for(int64_t(batch.n_tokens) * p.n_head, [&](int64_t b, int64_t e) {
      std::vector<float> score, kv_tmp(d);
      for (int64_t th = b; th < e; ++th) {
        const int t = int(th / p.n_head), h = int(th % p.n_head), hk = h / group;
        const int s = batch.seq[t], n_kv = batch.pos[t] + 1;
        const float* qv = q + th * d;
        // Reads K or V head hk at position j of sequence s as fp32 (dequantized when not F32).
        auto kv_at = [&](void* base, int j) -> const float* {
          const uint8_t* src = kv_row(cache, base, s, j) + hk * head_bytes;
          if (f32) return reinterpret_cast<const float*>(src);
          dequantize(src, kv_tmp.data(), d);
          return kv_tmp.data();
        };
        score.resize(n_kv);
        float mx = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < n_kv; ++j) {
          score[j] = dot_f32(qv, kv_at(cache.k, j), d) * p.scale;
          mx = std::max(mx, score[j]);
        }
        float sum = 0.f;
        for (int j = 0; j < n_kv; ++j) sum += score[j] = std::exp(score[j] - mx);
        float* o = out + th * d;
        std::fill(o, o + d, 0.f);
        for (int j = 0; j < n_kv; ++j) {
          const float* vj = kv_at(cache.v, j);
          const float wj = score[j] / sum;
          for (int i = 0; i < d; ++i) o[i] += wj * vj[i];
        }
      }
    });
  }

  void swiglu(float* out, const float* gate, const float* up, int64_t n) override {
    pool_.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
    });
  }

  void add(float* out, const float* a, const float* b, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
  }

  void argmax(int32_t* out, const float* x, int n_rows, int n) override {
    for (int r = 0; r < n_rows; ++r) {
      const float* xr = x + int64_t(r) * n;
      out[r] = int32_t(std::max_element(xr, xr + n) - xr);
    }
  }

 private:
  ThreadPool pool_;
  bool exact_;
  cpu::QuantizedMatmul fast_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads, bool exact) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  return std::make_unique<CpuBackend>(n_threads, exact);
}

}  // namespace qwen
