// RoPE (in place on x [n_tokens][n_head][head_dim]), the KV-cache write, and both fused.
// Pair i turns by pos * inv_freq[i] (the per-dimension table the model computed at load, scaling
// included), computed in fp64 (~1e5 rad at long contexts, where fp32 would lose the low bits that
// decide sin/cos); cos and sin are scaled by mscale and the rotation itself is fp32, as on the CPU.
#include <type_traits>

#include "backend/cuda/ops.cuh"

namespace qwen::cuda {
namespace {

// Rotates pair i of the head vector v (head_dim elements) at position p; returns the new values.
__device__ __forceinline__ void rotate_pair(float* v, int p, int i, int head_dim, const float* inv_freq,
                                            float mscale, bool neox, float& out_a, float& out_b, int& ia,
                                            int& ib) {
  const int half = head_dim / 2;
  const double theta = double(p) * double(inv_freq[i]);
  double sn, cs;
  sincos(theta, &sn, &cs);
  const float c = float(cs) * mscale, s = float(sn) * mscale;
  ia = neox ? i : 2 * i;
  ib = neox ? i + half : 2 * i + 1;
  const float x0 = v[ia], x1 = v[ib];
  out_a = x0 * c - x1 * s;
  out_b = x0 * s + x1 * c;
}

// One thread per rotated pair (t, h, i), i < head_dim / 2.
__global__ void rope_kernel(float* __restrict__ x, const int32_t* __restrict__ pos, int n_head, int head_dim,
                            const float* __restrict__ inv_freq, float mscale, bool neox, int64_t n_pairs) {
  pdl_begin();
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_pairs) return;
  const int half = head_dim / 2;
  const int i = int(idx % half);
  const int64_t th = idx / half;  // t * n_head + h
  float* v = x + th * head_dim;
  float a, b;
  int ia, ib;
  rotate_pair(v, pos[th / n_head], i, head_dim, inv_freq, mscale, neox, a, b, ia, ib);
  v[ia] = a;
  v[ib] = b;
}

template <class KV>
__device__ __forceinline__ KV to_kv(float x) {
  if constexpr (std::is_same_v<KV, __half>) {
    return __float2half_rn(x);
  } else {
    return x;
  }
}

// rope(x0), rope(k), kv_store(k, v) in one pass. Per token: n_head0 * half pairs of x0, then
// n_kv * half pairs of k (rotated in place and written to the K cache), then n_kv * head_dim
// elements of v (written to the V cache).
template <class KV>
__global__ void rope_store_kernel(float* __restrict__ x0, int n_head0, float* __restrict__ k,
                                  const float* __restrict__ v, KV* __restrict__ kc, KV* __restrict__ vc,
                                  const int32_t* __restrict__ pos, const int32_t* __restrict__ seq, int n_seq,
                                  int n_ctx, int n_kv, int head_dim, const float* __restrict__ inv_freq,
                                  float mscale, bool neox, int64_t n) {
  pdl_begin();
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int half = head_dim / 2;
  const int64_t p0 = int64_t(n_head0) * half, pk = int64_t(n_kv) * half,
                per_token = p0 + pk + int64_t(n_kv) * head_dim;
  const int64_t t = idx / per_token, j = idx % per_token;
  const int p = pos[t], sq = seq ? seq[t] : 0;
  // Positions are validated by the runtime against n_ctx; never write outside the cache.
  const bool in_cache = p >= 0 && p < n_ctx && sq >= 0 && sq < n_seq;
  const int64_t cache_row = (int64_t(sq) * n_ctx + p) * n_kv * head_dim;
  float a, b;
  int ia, ib;
  if (j < p0) {
    float* hv = x0 + (t * n_head0 + j / half) * head_dim;
    rotate_pair(hv, p, int(j % half), head_dim, inv_freq, mscale, neox, a, b, ia, ib);
    hv[ia] = a;
    hv[ib] = b;
  } else if (j < p0 + pk) {
    const int64_t h = (j - p0) / half;
    float* hv = k + (t * n_kv + h) * head_dim;
    rotate_pair(hv, p, int((j - p0) % half), head_dim, inv_freq, mscale, neox, a, b, ia, ib);
    hv[ia] = a;
    hv[ib] = b;
    if (in_cache) {
      kc[cache_row + h * head_dim + ia] = to_kv<KV>(a);
      kc[cache_row + h * head_dim + ib] = to_kv<KV>(b);
    }
  } else if (in_cache) {
    const int64_t e = j - p0 - pk;
    vc[cache_row + e] = to_kv<KV>(v[t * n_kv * head_dim + e]);
  }
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
  kc[dst] = to_kv<KV>(k[idx]);
  vc[dst] = to_kv<KV>(v[idx]);
}

}  // namespace

void rope(cudaStream_t s, float* x, const int32_t* pos, int n_tokens, int n_head, int head_dim,
          const RopeParams& r) {
  if (n_tokens == 0) return;
  QWEN_CHECK(head_dim > 0 && head_dim % 2 == 0, "cuda rope: head_dim ", head_dim, " must be even");
  QWEN_CHECK(r.inv_freq != nullptr, "cuda rope: no frequency table");
  const int64_t n_pairs = int64_t(n_tokens) * n_head * (head_dim / 2);
  launch(rope_kernel, dim3(unsigned(ceil_div(n_pairs, 256))), dim3(256), s, x, pos, n_head, head_dim,
         r.inv_freq, r.mscale, r.mode == RopeMode::Neox, n_pairs);
  QWEN_CUDA_LAUNCH_CHECK();
}

void kv_store(cudaStream_t s, KVLayer& cache, const float* k, const float* v, const Batch& batch) {
  if (batch.n_tokens == 0) return;
  const int row = cache.n_head_kv * cache.head_dim;
  const int64_t n = int64_t(batch.n_tokens) * row;
  const unsigned blocks = unsigned(ceil_div(n, 256));
  if (cache.type == GGMLType::F16) {
    launch(kv_store_kernel<__half>, dim3(blocks), dim3(256), s, static_cast<__half*>(cache.k),
           static_cast<__half*>(cache.v), k, v, batch.pos, batch.seq, cache.n_seq, cache.n_ctx, row, n);
  } else {
    QWEN_CHECK(cache.type == GGMLType::F32, "cuda kv_store: KV cache type ", type_name(cache.type),
               " is not supported (F16 or F32)");
    launch(kv_store_kernel<float>, dim3(blocks), dim3(256), s, static_cast<float*>(cache.k),
           static_cast<float*>(cache.v), k, v, batch.pos, batch.seq, cache.n_seq, cache.n_ctx, row, n);
  }
  QWEN_CUDA_LAUNCH_CHECK();
}

void rope_store(cudaStream_t s, float* x0, int n_head0, float* k, const float* v, KVLayer& cache,
                const Batch& batch, const RopeParams& r) {
  if (batch.n_tokens == 0) return;
  const int hd = cache.head_dim;
  QWEN_CHECK(hd > 0 && hd % 2 == 0, "cuda rope: head_dim ", hd, " must be even");
  QWEN_CHECK(r.inv_freq != nullptr, "cuda rope: no frequency table");
  const int64_t per_token = int64_t(n_head0) * (hd / 2) + int64_t(cache.n_head_kv) * (hd / 2 + hd);
  const int64_t n = per_token * batch.n_tokens;
  const dim3 grid(unsigned(ceil_div(n, 256)));
  const bool neox = r.mode == RopeMode::Neox;
  if (cache.type == GGMLType::F16) {
    launch(rope_store_kernel<__half>, grid, dim3(256), s, x0, n_head0, k, v, static_cast<__half*>(cache.k),
           static_cast<__half*>(cache.v), batch.pos, batch.seq, cache.n_seq, cache.n_ctx, cache.n_head_kv, hd,
           r.inv_freq, r.mscale, neox, n);
  } else {
    QWEN_CHECK(cache.type == GGMLType::F32, "cuda kv_store: KV cache type ", type_name(cache.type),
               " is not supported (F16 or F32)");
    launch(rope_store_kernel<float>, grid, dim3(256), s, x0, n_head0, k, v, static_cast<float*>(cache.k),
           static_cast<float*>(cache.v), batch.pos, batch.seq, cache.n_seq, cache.n_ctx, cache.n_head_kv, hd,
           r.inv_freq, r.mscale, neox, n);
  }
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace qwen::cuda
