// Causal GQA attention over the KV cache, prefill and decode in one kernel family.
//
// q [n_tokens][n_head][head_dim] fp32; cache K/V [n_seq][n_ctx][n_head_kv][head_dim] (F32, F16,
// BF16, or Q8_0: each head a row of head_dim/32 ggml blocks, read as d * q exactly as the CPU
// dequantizes); out [n_tokens][n_head][head_dim]. Token t attends to keys [0, pos[t]] of
// sequence seq[t].
//
// Grid (n_splits, n_head, n_tokens), 4 warps per block. The key range of a token is cut into
// n_splits equal parts *on the device*, from pos[t], so the launch shape does not depend on the
// position and a captured decode graph replays unchanged (split-K / flash-decoding). Each warp
// walks every 4th key of its block's part with an online softmax; a lane owns head_dim/32
// dimensions. Scores, softmax and accumulation are fp32. With one split the block writes the
// normalized output; otherwise it writes (acc, max, sum) partials and the last split of each
// (token, head) to finish merges them, so decode attention is a single kernel.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backend/cuda/ops.cuh"

namespace qwen::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxSplits = 32;

// Tag of a Q8_0 cache: blocks of 32 elements, an fp16 scale d then 32 int8 q (34 bytes).
struct Q8 {};
constexpr int kQ8Block = 32, kQ8Bytes = 34;

// Bytes of one head (HD elements) of a cache row.
template <class KV, int HD>
constexpr int64_t head_bytes() {
  if constexpr (std::is_same_v<KV, Q8>) {
    return HD / kQ8Block * kQ8Bytes;
  } else {
    return HD * int64_t(sizeof(KV));
  }
}

// Lane `lane`'s D consecutive elements (from lane * D) of the head starting at `head`, as fp32.
template <class KV, int D>
__device__ __forceinline__ void load_row(const uint8_t* head, int lane, float out[D]) {
  if constexpr (std::is_same_v<KV, Q8>) {
    // D divides 32, so a lane's elements sit in one block.
    const uint8_t* blk = head + (lane * D / kQ8Block) * kQ8Bytes;
    const float d = __half2float(*reinterpret_cast<const __half*>(blk));
    const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2) + (lane * D) % kQ8Block;
#pragma unroll
    for (int i = 0; i < D; ++i) out[i] = d * float(qs[i]);
  } else if constexpr (std::is_same_v<KV, __half> && D % 2 == 0) {
    const auto* p = reinterpret_cast<const __half2*>(head) + lane * D / 2;
#pragma unroll
    for (int i = 0; i < D / 2; ++i) {
      const float2 f = __half22float2(p[i]);
      out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
  } else if constexpr (std::is_same_v<KV, __nv_bfloat16> && D % 2 == 0) {
    const auto* p = reinterpret_cast<const __nv_bfloat162*>(head) + lane * D / 2;
#pragma unroll
    for (int i = 0; i < D / 2; ++i) {
      const float2 f = __bfloat1622float2(p[i]);
      out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
  } else {
    const KV* p = reinterpret_cast<const KV*>(head) + lane * D;
#pragma unroll
    for (int i = 0; i < D; ++i) out[i] = float(p[i]);
  }
}

// Split-K attention: element d of the output of one (token, head), merged from the n_splits
// partials at p0, each [hd] unnormalized sums, then that split's running max m and sum l, in split
// order (the result does not depend on which block merges); m is in natural units. A split that
// saw no key has m = -inf and weighs nothing; with none at all the output is 0. Read through L2
// (__ldcg): other blocks wrote the partials.
__device__ __forceinline__ float merge_split_partials(const float* p0, int n_splits, int hd, int d) {
  float gmax = -INFINITY;
  for (int sp = 0; sp < n_splits; ++sp) gmax = fmaxf(gmax, __ldcg(p0 + sp * (hd + 2) + hd));
  float a = 0.f, l = 0.f;
  for (int sp = 0; sp < n_splits; ++sp) {
    const float* ps = p0 + sp * (hd + 2);
    const float m = __ldcg(ps + hd);
    const float w = m == -INFINITY ? 0.f : expf(m - gmax);
    a += w * __ldcg(ps + d);
    l += w * __ldcg(ps + hd + 1);
  }
  return l > 0.f ? a / l : 0.f;
}

template <class KV, int HD>
__global__ void __launch_bounds__(kWarps* kWarp)
    attn_kernel(float* __restrict__ out, float* __restrict__ part, unsigned* __restrict__ counters,
                const float* __restrict__ q, const uint8_t* __restrict__ kc, const uint8_t* __restrict__ vc,
                const int32_t* __restrict__ pos, const int32_t* __restrict__ seq, int n_head, int group,
                int n_kv, int n_ctx, int n_seq, float scale, int n_splits) {
  pdl_begin();
  constexpr int D = HD / kWarp;  // dims per lane
  __shared__ float s_m[kWarps], s_l[kWarps], s_acc[kWarps][HD];
  const int split = blockIdx.x, h = blockIdx.y;
  const int64_t t = blockIdx.z;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int sq = seq ? min(max(seq[t], 0), n_seq - 1) : 0;
  const int n_keys = min(max(pos[t] + 1, 0), n_ctx);
  const int chunk = (n_keys + n_splits - 1) / n_splits;
  const int start = split * chunk, end = min(start + chunk, n_keys);

  float qv[D];
  const float* qp = q + (t * n_head + h) * HD + lane * D;
#pragma unroll
  for (int i = 0; i < D; ++i) qv[i] = qp[i] * scale;
  constexpr int64_t kHeadBytes = head_bytes<KV, HD>();
  const int64_t kv_stride = int64_t(n_kv) * kHeadBytes;  // bytes of one cache row
  const int64_t base = int64_t(sq) * n_ctx * kv_stride + int64_t(h / group) * kHeadBytes;

  float m = -INFINITY, l = 0.f, acc[D];
#pragma unroll
  for (int i = 0; i < D; ++i) acc[i] = 0.f;
  for (int j = start + warp; j < end; j += kWarps) {
    float kv[D];
    load_row<KV, D>(kc + base + j * kv_stride, lane, kv);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < D; ++i) s = fmaf(qv[i], kv[i], s);
    s = warp_sum(s);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), p = expf(s - m_new);
    l = l * corr + p;
    load_row<KV, D>(vc + base + j * kv_stride, lane, kv);
#pragma unroll
    for (int i = 0; i < D; ++i) acc[i] = fmaf(p, kv[i], acc[i] * corr);
    m = m_new;
  }
  if (lane == 0) s_m[warp] = m, s_l[warp] = l;
#pragma unroll
  for (int i = 0; i < D; ++i) s_acc[warp][lane * D + i] = acc[i];
  __syncthreads();

  float mx = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w]);
  float wt[kWarps], sum = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    wt[w] = s_m[w] == -INFINITY ? 0.f : expf(s_m[w] - mx);
    sum += wt[w] * s_l[w];
  }
  const int64_t th = t * n_head + h;
  if (n_splits == 1) {
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
      float a = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) a += wt[w] * s_acc[w][d];
      out[th * HD + d] = a / sum;
    }
    return;
  }
  // Split-K: publish this split's partial, and let the last split of (t, h) to finish merge them
  // all (a counter per (t, h), reset by that block so the next replay starts from zero).
  float* pp = part + (th * n_splits + split) * (HD + 2);
  for (int d = threadIdx.x; d < HD; d += blockDim.x) {
    float a = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) a += wt[w] * s_acc[w][d];
    pp[d] = a;
  }
  if (threadIdx.x == 0) pp[HD] = mx, pp[HD + 1] = sum;
  __threadfence();
  __syncthreads();
  __shared__ bool s_last;
  if (threadIdx.x == 0) s_last = atomicAdd(&counters[th], 1u) == unsigned(n_splits - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const float* p0 = part + th * n_splits * (HD + 2);
  for (int d = threadIdx.x; d < HD; d += blockDim.x)
    out[th * HD + d] = merge_split_partials(p0, n_splits, HD, d);
  if (threadIdx.x == 0) counters[th] = 0;
}

template <class KV, int HD>
void launch_attn(cudaStream_t s, int n_sm, const DecodeScratch& scratch, float* out, const float* q,
                 const KVLayer& cache, const Batch& batch, const AttentionParams& p) {
  // Split the keys only when (token, head) pairs alone cannot fill the GPU (decode); the
  // split count depends on shapes only, never on positions (graph replay).
  const int64_t units = int64_t(batch.n_tokens) * p.n_head;
  int n_splits = 1;
  if (units < 2 * n_sm) {
    n_splits = int(std::min<int64_t>({kMaxSplits, ceil_div(2 * n_sm, units), std::max(1, cache.n_ctx / 64)}));
    while (n_splits > 1 && units * n_splits * (HD + 2) > kAttnPartialFloats) --n_splits;
    if (units > kMaxCounters) n_splits = 1;
  }
  const dim3 grid(unsigned(n_splits), unsigned(p.n_head), unsigned(batch.n_tokens));
  launch(attn_kernel<KV, HD>, grid, dim3(kWarps * kWarp), s, out, scratch.attn_partials,
         scratch.attn_counters, q, static_cast<const uint8_t*>(cache.k), static_cast<const uint8_t*>(cache.v),
         batch.pos, batch.seq, p.n_head, p.n_head / p.n_head_kv, p.n_head_kv, cache.n_ctx, cache.n_seq,
         p.scale, n_splits);
  QWEN_CUDA_LAUNCH_CHECK();
}

template <class KV>
void launch_hd(cudaStream_t s, int n_sm, const DecodeScratch& scratch, float* out, const float* q,
               const KVLayer& cache, const Batch& batch, const AttentionParams& p) {
  dispatch_head_dim(p.head_dim, "attention",
                    [&]<int HD>() { launch_attn<KV, HD>(s, n_sm, scratch, out, q, cache, batch, p); });
}

}  // namespace

const char* attention(cudaStream_t s, int n_sm, const DecodeScratch& scratch, float* out, const float* q,
                      const KVLayer& cache, const Batch& batch, const AttentionParams& p, bool fast) {
  if (batch.n_tokens == 0) return "attention";
  QWEN_CHECK(p.n_head_kv > 0 && p.n_head % p.n_head_kv == 0, "cuda attention: n_head ", p.n_head,
             " is not a multiple of n_head_kv ", p.n_head_kv);
  QWEN_CHECK(cache.head_dim == p.head_dim && cache.n_head_kv == p.n_head_kv, "cuda attention: cache shape (",
             cache.n_head_kv, " heads x ", cache.head_dim, ") does not match the parameters (", p.n_head_kv,
             " x ", p.head_dim, ")");
  QWEN_CHECK(batch.n_tokens <= 65535 && p.n_head <= 65535, "cuda attention: too many tokens or heads");
  if (fast && flash_attention_supports(cache, p)) {
    flash_attention(s, n_sm, scratch, out, q, cache, batch, p);
    return "flash_attention";
  }
  switch (cache.type) {
    case GGMLType::F16:
      launch_hd<__half>(s, n_sm, scratch, out, q, cache, batch, p);
      break;
    case GGMLType::BF16:
      launch_hd<__nv_bfloat16>(s, n_sm, scratch, out, q, cache, batch, p);
      break;
    case GGMLType::Q8_0:
      launch_hd<Q8>(s, n_sm, scratch, out, q, cache, batch, p);
      break;
    case GGMLType::F32:
      launch_hd<float>(s, n_sm, scratch, out, q, cache, batch, p);
      break;
    default:
      QWEN_FAIL("cuda attention: KV cache type ", type_name(cache.type),
                " is not supported (F32, F16, BF16, Q8_0)");
  }
  return "attention";
}

}  // namespace qwen::cuda
