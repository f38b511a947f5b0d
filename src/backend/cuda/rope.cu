// RoPE (in place on x [n_tokens][n_head][head_dim]), the KV-cache write, and both fused.
// Pair i turns by pos * inv_freq[i] (the per-dimension table the model computed at load, scaling
// included), computed in fp64 (~1e5 rad at long contexts, where fp32 would lose the low bits that
// decide sin/cos); cos and sin are scaled by mscale and the rotation itself is fp32, as on the CPU.
// Cache types: F32, F16, BF16 (one thread per element, round to nearest even) and Q8_0 (one warp
// per head: a block of 32 is one element per lane, so its absmax is a warp reduction; rounded as
// gguf's quantize_row: d = amax / 127, q = round(x * (1 / d)) half away from zero).
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
  } else if constexpr (std::is_same_v<KV, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else {
    return x;
  }
}

constexpr int kQ8Bytes = 34;  // a Q8_0 block: fp16 d, then 32 int8 q
constexpr int kQ8Warps = 4;   // warps per block of rope_store_q8_kernel

// Lane `lane` holds elements lane + 32 m (m < E) of one head of E * 32 elements; turns every pair
// of the head at position p with the same arithmetic as rotate_pair. Neox pairs (i, i + half)
// sit in one lane (half is a multiple of 32); normal pairs (2i, 2i + 1) in neighbouring lanes.
template <int E>
__device__ __forceinline__ void rotate_lane(float (&x)[E], int lane, int p, const float* inv_freq,
                                            float mscale, bool neox) {
  if (neox) {
#pragma unroll
    for (int m = 0; m < E / 2; ++m) {
      double sn, cs;
      sincos(double(p) * double(inv_freq[lane + 32 * m]), &sn, &cs);
      const float c = float(cs) * mscale, s = float(sn) * mscale;
      const float x0 = x[m], x1 = x[m + E / 2];
      x[m] = x0 * c - x1 * s;
      x[m + E / 2] = x0 * s + x1 * c;
    }
  } else {
    const bool first = (lane & 1) == 0;
#pragma unroll
    for (int m = 0; m < E; ++m) {
      double sn, cs;
      sincos(double(p) * double(inv_freq[(lane + 32 * m) / 2]), &sn, &cs);
      const float c = float(cs) * mscale, s = float(sn) * mscale;
      const float other = __shfl_xor_sync(0xffffffffu, x[m], 1);
      const float x0 = first ? x[m] : other, x1 = first ? other : x[m];
      x[m] = first ? x0 * c - x1 * s : x0 * s + x1 * c;
    }
  }
}

// Writes the head held by the warp (see rotate_lane) as E Q8_0 blocks at dst.
template <int E>
__device__ __forceinline__ void store_q8(uint8_t* dst, const float (&x)[E], int lane) {
#pragma unroll
  for (int m = 0; m < E; ++m) {
    const float amax = warp_max(fabsf(x[m]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    uint8_t* blk = dst + m * kQ8Bytes;
    if (lane == 0) *reinterpret_cast<__half*>(blk) = __float2half_rn(d);
    blk[2 + lane] = uint8_t(int8_t(roundf(x[m] * id)));
  }
}

// rope(x0) (n_head0 heads, may be 0), rope(k) when inv_freq is set, and the Q8_0 store of k and v:
// one warp per head, per token n_head0 + 2 * n_kv of them (x0's, k's, v's). k_out receives the
// rotated k (null without rope: k_in is then only read); the fused op passes k as both, so neither
// is __restrict__. head_dim E * 32 is 64, 128 or 256 (Neox pairs then never cross lanes).
template <int E>
__global__ void __launch_bounds__(kQ8Warps* kWarp)
    rope_store_q8_kernel(float* __restrict__ x0, int n_head0, const float* k_in, float* k_out,
                         const float* __restrict__ v, uint8_t* __restrict__ kc, uint8_t* __restrict__ vc,
                         const int32_t* __restrict__ pos, const int32_t* __restrict__ seq, int n_seq,
                         int n_ctx, int n_kv, const float* __restrict__ inv_freq, float mscale, bool neox,
                         int64_t n_units) {
  pdl_begin();
  constexpr int HD = E * 32;
  const int64_t unit = int64_t(blockIdx.x) * kQ8Warps + threadIdx.x / kWarp;
  if (unit >= n_units) return;  // whole warps leave together: the shuffles stay full
  const int lane = threadIdx.x % kWarp;
  const int per_token = n_head0 + 2 * n_kv;
  const int64_t t = unit / per_token;
  const int j = int(unit % per_token);
  const int p = pos[t], sq = seq ? seq[t] : 0;
  float x[E];
  if (j < n_head0) {
    float* hv = x0 + (t * n_head0 + j) * HD;
#pragma unroll
    for (int m = 0; m < E; ++m) x[m] = hv[lane + 32 * m];
    rotate_lane<E>(x, lane, p, inv_freq, mscale, neox);
#pragma unroll
    for (int m = 0; m < E; ++m) hv[lane + 32 * m] = x[m];
    return;
  }
  const bool is_k = j < n_head0 + n_kv;
  const int h = is_k ? j - n_head0 : j - n_head0 - n_kv;
  const int64_t src = (t * n_kv + h) * HD;
#pragma unroll
  for (int m = 0; m < E; ++m) x[m] = (is_k ? k_in : v)[src + lane + 32 * m];
  if (is_k && inv_freq != nullptr) {
    rotate_lane<E>(x, lane, p, inv_freq, mscale, neox);
#pragma unroll
    for (int m = 0; m < E; ++m) k_out[src + lane + 32 * m] = x[m];
  }
  // Positions are validated by the runtime against n_ctx; never write outside the cache.
  if (p < 0 || p >= n_ctx || sq < 0 || sq >= n_seq) return;
  const int64_t row = int64_t(n_kv) * E * kQ8Bytes;  // bytes of one cache row
  store_q8<E>((is_k ? kc : vc) + (int64_t(sq) * n_ctx + p) * row + int64_t(h) * E * kQ8Bytes, x, lane);
}

void launch_rope_store_q8(cudaStream_t s, float* x0, int n_head0, const float* k_in, float* k_out,
                          const float* v, KVLayer& cache, const Batch& batch, const RopeParams* r) {
  const int64_t n_units = int64_t(batch.n_tokens) * (n_head0 + 2 * cache.n_head_kv);
  const dim3 grid(unsigned(ceil_div(n_units, kQ8Warps))), block(kQ8Warps * kWarp);
  auto* kc = static_cast<uint8_t*>(cache.k);
  auto* vc = static_cast<uint8_t*>(cache.v);
  const float* inv_freq = r ? r->inv_freq : nullptr;
  const float mscale = r ? r->mscale : 1.f;
  const bool neox = r ? r->mode == RopeMode::Neox : true;
  switch (cache.head_dim) {
    case 64:
      launch(rope_store_q8_kernel<2>, grid, block, s, x0, n_head0, k_in, k_out, v, kc, vc, batch.pos,
             batch.seq, cache.n_seq, cache.n_ctx, cache.n_head_kv, inv_freq, mscale, neox, n_units);
      break;
    case 128:
      launch(rope_store_q8_kernel<4>, grid, block, s, x0, n_head0, k_in, k_out, v, kc, vc, batch.pos,
             batch.seq, cache.n_seq, cache.n_ctx, cache.n_head_kv, inv_freq, mscale, neox, n_units);
      break;
    case 256:
      launch(rope_store_q8_kernel<8>, grid, block, s, x0, n_head0, k_in, k_out, v, kc, vc, batch.pos,
             batch.seq, cache.n_seq, cache.n_ctx, cache.n_head_kv, inv_freq, mscale, neox, n_units);
      break;
    default:
      QWEN_FAIL("cuda kv_store: a Q8_0 KV cache needs head_dim 64, 128 or 256, not ", cache.head_dim);
  }
  QWEN_CUDA_LAUNCH_CHECK();
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

template <class KV>
void launch_kv_store(cudaStream_t s, KVLayer& cache, const float* k, const float* v, const Batch& batch) {
  const int row = cache.n_head_kv * cache.head_dim;
  const int64_t n = int64_t(batch.n_tokens) * row;
  launch(kv_store_kernel<KV>, dim3(unsigned(ceil_div(n, 256))), dim3(256), s, static_cast<KV*>(cache.k),
         static_cast<KV*>(cache.v), k, v, batch.pos, batch.seq, cache.n_seq, cache.n_ctx, row, n);
}

template <class KV>
void launch_rope_store(cudaStream_t s, float* x0, int n_head0, float* k, const float* v, KVLayer& cache,
                       const Batch& batch, const RopeParams& r) {
  const int hd = cache.head_dim;
  const int64_t per_token = int64_t(n_head0) * (hd / 2) + int64_t(cache.n_head_kv) * (hd / 2 + hd);
  const int64_t n = per_token * batch.n_tokens;
  launch(rope_store_kernel<KV>, dim3(unsigned(ceil_div(n, 256))), dim3(256), s, x0, n_head0, k, v,
         static_cast<KV*>(cache.k), static_cast<KV*>(cache.v), batch.pos, batch.seq, cache.n_seq, cache.n_ctx,
         cache.n_head_kv, hd, r.inv_freq, r.mscale, r.mode == RopeMode::Neox, n);
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
  switch (cache.type) {
    case GGMLType::F32:
      launch_kv_store<float>(s, cache, k, v, batch);
      break;
    case GGMLType::F16:
      launch_kv_store<__half>(s, cache, k, v, batch);
      break;
    case GGMLType::BF16:
      launch_kv_store<__nv_bfloat16>(s, cache, k, v, batch);
      break;
    case GGMLType::Q8_0:
      return launch_rope_store_q8(s, nullptr, 0, k, nullptr, v, cache, batch, nullptr);
    default:
      QWEN_FAIL("cuda kv_store: KV cache type ", type_name(cache.type),
                " is not supported (F32, F16, BF16, Q8_0)");
  }
  QWEN_CUDA_LAUNCH_CHECK();
}

void rope_store(cudaStream_t s, float* x0, int n_head0, float* k, const float* v, KVLayer& cache,
                const Batch& batch, const RopeParams& r) {
  if (batch.n_tokens == 0) return;
  const int hd = cache.head_dim;
  QWEN_CHECK(hd > 0 && hd % 2 == 0, "cuda rope: head_dim ", hd, " must be even");
  QWEN_CHECK(r.inv_freq != nullptr, "cuda rope: no frequency table");
  switch (cache.type) {
    case GGMLType::F32:
      launch_rope_store<float>(s, x0, n_head0, k, v, cache, batch, r);
      break;
    case GGMLType::F16:
      launch_rope_store<__half>(s, x0, n_head0, k, v, cache, batch, r);
      break;
    case GGMLType::BF16:
      launch_rope_store<__nv_bfloat16>(s, x0, n_head0, k, v, cache, batch, r);
      break;
    case GGMLType::Q8_0:
      return launch_rope_store_q8(s, x0, n_head0, k, k, v, cache, batch, &r);
    default:
      QWEN_FAIL("cuda kv_store: KV cache type ", type_name(cache.type),
                " is not supported (F32, F16, BF16, Q8_0)");
  }
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace qwen::cuda
