// RoPE (in place on x [n_tokens][n_head][head_dim]) and the KV-cache write.
// Angles are computed in fp64 (pos * base^(-2i/d) reaches ~1e5 rad at long contexts, where fp32
// would lose the low bits that decide sin/cos); the rotation itself is fp32.
#include <cmath>
#include <type_traits>

#include "backend/cuda/ops.cuh"

namespace qwen::cuda {
namespace {

// One thread per rotated pair (t, h, i), i < head_dim / 2.
__global__ void rope_kernel(float* __restrict__ x, const int32_t* __restrict__ pos, int n_head, int head_dim,
                            double log2_base, bool neox, int64_t n_pairs) {
  pdl_begin();
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_pairs) return;
  const int half = head_dim / 2;
  const int i = int(idx % half);
  const int64_t th = idx / half;  // t * n_head + h
  const int64_t t = th / n_head;
  const double theta = double(pos[t]) * exp2(-log2_base * (2.0 * i / head_dim));
  double sn, cs;
  sincos(theta, &sn, &cs);
  const float c = float(cs), s = float(sn);
  float* v = x + th * head_dim;
  const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
  const float x0 = v[a], x1 = v[b];
  v[a] = x0 * c - x1 * s;
  v[b] = x0 * s + x1 * c;
}

// One thread per cached element of the batch: (t, j) with j < n_head_kv * head_dim.
template <class KV>
__global__ void kv_store_kernel(KV* __restrict__ kc, KV* __restrict__ vc, const float* __restrict__ k,
                                const float* __restrict__ v, const int32_t* __restrict__ pos,
                                const int32_t* __restrict__ seq, int n_seq, int n_ctx, int row, int64_t n) {
  pdl_begin();
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int64_t t = idx / row, j = idx % row;
  const int p = pos[t], sq = seq ? seq[t] : 0;
  // Positions are validated by the runtime against n_ctx; never write outside the cache.
  if (p < 0 || p >= n_ctx || sq < 0 || sq >= n_seq) return;
  const int64_t dst = (int64_t(sq) * n_ctx + p) * row + j;
  if constexpr (std::is_same_v<KV, __half>) {
    kc[dst] = __float2half_rn(k[idx]);
    vc[dst] = __float2half_rn(v[idx]);
  } else {
    kc[dst] = k[idx];
    vc[dst] = v[idx];
  }
}

}  // namespace

void rope(cudaStream_t s, float* x, const int32_t* pos, int n_tokens, int n_head, int head_dim, float freq_base,
          RopeMode mode) {
  if (n_tokens == 0) return;
  QWEN_CHECK(head_dim > 0 && head_dim % 2 == 0, "cuda rope: head_dim ", head_dim, " must be even");
  QWEN_CHECK(freq_base > 0.f, "cuda rope: freq_base ", freq_base, " must be positive");
  const int64_t n_pairs = int64_t(n_tokens) * n_head * (head_dim / 2);
  launch(rope_kernel, dim3(unsigned(ceil_div(n_pairs, 256))), dim3(256), s, x, pos, n_head, head_dim, std::log2(double(freq_base)),
                                                                mode == RopeMode::Neox, n_pairs);
  QWEN_CUDA_LAUNCH_CHECK();
}

void kv_store(cudaStream_t s, KVLayer& cache, const float* k, const float* v, const Batch& batch) {
  if (batch.n_tokens == 0) return;
  const int row = cache.n_head_kv * cache.head_dim;
  const int64_t n = int64_t(batch.n_tokens) * row;
  const unsigned blocks = unsigned(ceil_div(n, 256));
  if (cache.type == GGMLType::F16) {
    launch(kv_store_kernel<__half>, dim3(blocks), dim3(256), s, static_cast<__half*>(cache.k), static_cast<__half*>(cache.v), k,
                                                   v, batch.pos, batch.seq, cache.n_seq, cache.n_ctx, row, n);
  } else {
    QWEN_CHECK(cache.type == GGMLType::F32, "cuda kv_store: KV cache type ", type_name(cache.type),
               " is not supported (F16 or F32)");
    launch(kv_store_kernel<float>, dim3(blocks), dim3(256), s, static_cast<float*>(cache.k), static_cast<float*>(cache.v), k, v,
                                                  batch.pos, batch.seq, cache.n_seq, cache.n_ctx, row, n);
  }
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace qwen::cuda
