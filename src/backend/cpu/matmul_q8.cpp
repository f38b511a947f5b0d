#include "backend/cpu/matmul_q8.h"

namespace qwen::cpu {

bool QuantizedMatmul::run(ThreadPool& pool, float* y, const Weight& w, const float* x, int n_tokens,
                          const float* bias) {
  const QDotFn dot = k_.dot(w.type);
  if (dot == nullptr) return false;
  const int64_t k = w.ne0, m = w.ne1;
  QWEN_ASSERT(k % 32 == 0);  // every quantized type's block is a multiple of 32
  const size_t need = size_t(n_tokens) * size_t(k);
  if (q_.size() < need) {
    q_.resize(need);
    d16_.resize(need / 16);
    s16_.resize(need / 16);
  }
  auto row_of = [&](int64_t t) {
    return QuantizedRow{q_.data() + t * k, d16_.data() + t * (k / 16), s16_.data() + t * (k / 16)};
  };
  pool.parallel_for(n_tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) k_.quantize(x + t * k, k, row_of(t));
  });
  const size_t rb = w.row_bytes();
  const auto* base = static_cast<const uint8_t*>(w.data);
  // Rows outer, tokens inner: a row is read from memory once and stays in L1 for every token.
  pool.parallel_for(m, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const float add = bias ? bias[o] : 0.f;
      for (int t = 0; t < n_tokens; ++t) y[t * m + o] = dot(base + o * rb, row_of(t), k) + add;
    }
  });
  return true;
}

}  // namespace qwen::cpu
