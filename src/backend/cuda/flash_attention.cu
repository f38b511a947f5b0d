// Causal GQA attention for prefill on tensor cores (FlashAttention-2 style), the fast path of
// attention() for many tokens over an F16 cache (attention.cu chooses; the exact path keeps the
// fp32 kernel there).
//
// A block takes kRows = 64 consecutive tokens of the batch and one query head (grid.x = head,
// so the blocks of one KV group run side by side and share K/V tiles through L2); its 4 warps
// own 16 tokens each. q of the block is rounded to fp16 once into shared memory; K and V tiles
// of kKeys = 64 positions stream through a double buffer filled by cp.async while the previous
// tile is multiplied. Per tile a warp computes S = q K^T (mma m16n8k16, fp32 accumulate),
// masks keys past each token's position, updates the running max and sum of its rows in fp32
// (online softmax, base 2 with the scale folded into the exponent), rounds P to fp16 and adds
// P V into its fp32 output fragment. Accuracy: q and P carry 11 significant bits (K and V are
// stored in fp16 anyway); everything accumulated is fp32.
//
// Tokens of several sequences may share a block (continuous batching): the block runs one pass
// per distinct sequence among its tokens, over keys [0, max position of that sequence's tokens
// in the block]; a token is masked out of the other passes, so each token sees exactly the keys
// [0, pos] of its own sequence. Tiles wholly past a warp's last position skip the products.
#include <climits>

#include "backend/cuda/mma.cuh"
#include "backend/cuda/ops.cuh"

namespace qwen::cuda {
namespace {

constexpr int kRows = 64;  // tokens per block
constexpr int kKeys = 64;  // key positions per tile
constexpr int kFlashWarps = kRows / 16;
constexpr float kLog2e = 1.4426950408889634f;

// Row r's 16-byte granule c of a [rows][HD] fp16 tile sits at granule c ^ (r % 8) of the row:
// the 8 rows an ldmatrix reads at one column then hit 8 different bank groups.
template <int HD>
__device__ __forceinline__ int tile_offset(int r, int c) {
  return r * HD + ((c ^ (r % 8)) * 8);
}

template <int HD>
struct FlashSmem {
  __half q[kRows * HD];
  __half k[2][kKeys * HD];
  __half v[2][kKeys * HD];
};

template <int HD>
__global__ void __launch_bounds__(kFlashWarps* kWarp)
    flash_attn_kernel(float* __restrict__ out, const float* __restrict__ q, const __half* __restrict__ kc,
                      const __half* __restrict__ vc, const int32_t* __restrict__ pos,
                      const int32_t* __restrict__ seq, int n_tokens, int n_head, int group, int n_kv,
                      int n_ctx, int n_seq, float scale) {
  constexpr int kGranules = HD / 8;  // 16-byte granules per row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<FlashSmem<HD>*>(smem_raw);
  __shared__ int s_seq[kRows], s_pos[kRows];
  __shared__ int s_pass, s_kmax;
  pdl_begin();
  const int h = blockIdx.x;
  const int64_t t0 = int64_t(gridDim.y - 1 - blockIdx.y) * kRows;  // longest blocks first
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const int64_t kv_stride = int64_t(n_kv) * HD;
  const int kvh = h / group;

  if (tid < kRows) {
    const int64_t t = t0 + tid;
    const bool active = t < n_tokens;
    s_seq[tid] = active ? (seq ? min(max(seq[t], 0), n_seq - 1) : 0) : INT_MAX;
    s_pos[tid] = active ? min(pos[t], n_ctx - 1) : -1;
  }
  // q of the block's tokens, fp16, swizzled.
  for (int i = tid; i < kRows * kGranules; i += blockDim.x) {
    const int r = i / kGranules, c = i % kGranules;
    const int64_t t = t0 + r;
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (t < n_tokens) {
      const float4* src = reinterpret_cast<const float4*>(q + (t * n_head + h) * HD + c * 8);
      const float4 a = src[0], b = src[1];
      packed = make_uint4(pack2<__half>(a.x, a.y), pack2<__half>(a.z, a.w), pack2<__half>(b.x, b.y),
                          pack2<__half>(b.z, b.w));
    }
    *reinterpret_cast<uint4*>(sm.q + tile_offset<HD>(r, c)) = packed;
  }
  __syncthreads();

  // The warp's q fragments, kept in registers for every tile.
  uint32_t qf[HD / 16][4];
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk)
    ldmatrix_x4(qf[kk], sm.q + tile_offset<HD>(warp * 16 + lane % 16, 2 * kk + lane / 16));

  // Each thread holds rows g and g + 8 of its warp's 16 (the mma accumulator layout).
  const int g = lane / 4, r0 = warp * 16 + g, r1 = r0 + 8;
  float o[HD / 8][4];
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
  const float sl2 = scale * kLog2e;

  int prev = -1;
  for (;;) {
    // The next sequence among the block's tokens, and its last position here.
    if (tid == 0) s_pass = INT_MAX, s_kmax = -1;
    __syncthreads();
    if (tid < kRows && s_seq[tid] > prev && s_seq[tid] != INT_MAX) atomicMin(&s_pass, s_seq[tid]);
    __syncthreads();
    const int cur = s_pass;
    if (cur == INT_MAX) break;
    if (tid < kRows && s_seq[tid] == cur) atomicMax(&s_kmax, s_pos[tid]);
    __syncthreads();
    const int kmax = s_kmax;
    prev = cur;
    // A row's last key in this pass (-1: not in it), and the warp's.
    const int lim0 = s_seq[r0] == cur ? s_pos[r0] : -1, lim1 = s_seq[r1] == cur ? s_pos[r1] : -1;
    int warp_lim = max(lim0, lim1);
#pragma unroll
    for (int o2 = 16; o2 > 0; o2 >>= 1) warp_lim = max(warp_lim, __shfl_xor_sync(0xffffffffu, warp_lim, o2));

    const int64_t base = int64_t(cur) * n_ctx * kv_stride + int64_t(kvh) * HD;
    const int n_tiles = kmax / kKeys + 1;
    const auto load_tile = [&](int tile, int buf) {
      const int j0 = tile * kKeys;
      for (int i = tid; i < kKeys * kGranules; i += blockDim.x) {
        const int r = i / kGranules, c = i % kGranules;
        const int j = j0 + r;
        const int64_t off = base + int64_t(min(j, kmax)) * kv_stride + c * 8;
        const int bytes = j <= kmax ? 16 : 0;  // past the pass's last key: zeros (P is 0 there)
        cp_async16(sm.k[buf] + tile_offset<HD>(r, c), kc + off, bytes);
        cp_async16(sm.v[buf] + tile_offset<HD>(r, c), vc + off, bytes);
      }
      cp_async_commit();
    };
    load_tile(0, 0);
    for (int tile = 0; tile < n_tiles; ++tile) {
      const int buf = tile & 1;
      if (tile + 1 < n_tiles) {
        load_tile(tile + 1, buf ^ 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const int j0 = tile * kKeys;
      if (j0 <= warp_lim) {
        // S = q K^T for this warp's 16 rows and the tile's 64 keys.
        float s[kKeys / 8][4];
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
          for (int jj = 0; jj < kKeys / 16; ++jj) {
            // Keys 16 jj + (0..15), dims 16 kk + (0..15): B fragments of two 8-key tiles.
            uint32_t b[4];
            const int key = jj * 16 + (lane / 16) * 8 + lane % 8;
            ldmatrix_x4(b, sm.k[buf] + tile_offset<HD>(key, 2 * kk + (lane / 8) % 2));
            mma16816<__half>(s[2 * jj], qf[kk], b[0], b[1]);
            mma16816<__half>(s[2 * jj + 1], qf[kk], b[2], b[3]);
          }
        }
        // Mask, scale to base 2, and the online softmax of rows r0 (e = 0, 1) and r1 (e = 2, 3).
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < kKeys / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = j0 + 8 * j + 2 * (lane % 4) + (e & 1);
            const float v = key <= (e < 2 ? lim0 : lim1) ? s[j][e] * sl2 : -INFINITY;
            s[j][e] = v;
            mx[e / 2] = fmaxf(mx[e / 2], v);
          }
        }
        float corr[2], m_use[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
          mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
          const float m_new = fmaxf(m_run[i], mx[i]);
          m_use[i] = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet stays at zero
          corr[i] = exp2f(m_run[i] - m_use[i]);
          m_run[i] = m_new;
          l_run[i] *= corr[i];
        }
#pragma unroll
        for (int j = 0; j < HD / 8; ++j) {
          o[j][0] *= corr[0], o[j][1] *= corr[0];
          o[j][2] *= corr[1], o[j][3] *= corr[1];
        }
        // P in fp16 as A fragments (the accumulator layout of two 8-key tiles is the A layout of
        // one 16-key step), then O += P V.
#pragma unroll
        for (int jj = 0; jj < kKeys / 16; ++jj) {
          uint32_t pa[4];
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            float* sj = s[2 * jj + half];
            const float p0 = exp2f(sj[0] - m_use[0]), p1 = exp2f(sj[1] - m_use[0]);
            const float p2 = exp2f(sj[2] - m_use[1]), p3 = exp2f(sj[3] - m_use[1]);
            l_run[0] += p0 + p1;
            l_run[1] += p2 + p3;
            pa[2 * half] = pack2<__half>(p0, p1);
            pa[2 * half + 1] = pack2<__half>(p2, p3);
          }
#pragma unroll
          for (int dd = 0; dd < HD / 16; ++dd) {
            // Keys 16 jj + (0..15), dims 16 dd + (0..15), transposed into B fragments.
            uint32_t b[4];
            const int key = jj * 16 + ((lane / 8) % 2) * 8 + lane % 8;
            ldmatrix_x4_trans(b, sm.v[buf] + tile_offset<HD>(key, 2 * dd + lane / 16));
            mma16816<__half>(o[2 * dd], pa, b[0], b[1]);
            mma16816<__half>(o[2 * dd + 1], pa, b[2], b[3]);
          }
        }
      }
      __syncthreads();  // the buffer is refilled by the next iteration's load
    }
  }

  // Row sums across the quad, then the normalized rows.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_run[i] += __shfl_xor_sync(0xffffffffu, l_run[i], 1);
    l_run[i] += __shfl_xor_sync(0xffffffffu, l_run[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t t = t0 + (i == 0 ? r0 : r1);
    if (t >= n_tokens || l_run[i] == 0.f) continue;
    const float inv = 1.f / l_run[i];
    float* dst = out + (t * n_head + h) * HD + 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < HD / 8; ++j)
      *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
  }
}

template <int HD>
void launch_flash(cudaStream_t s, float* out, const float* q, const KVLayer& cache, const Batch& batch,
                  const AttentionParams& p) {
  const dim3 grid(unsigned(p.n_head), unsigned(ceil_div(batch.n_tokens, kRows)));
  launch_smem(flash_attn_kernel<HD>, grid, dim3(kFlashWarps * kWarp), sizeof(FlashSmem<HD>), s, out, q,
              static_cast<const __half*>(cache.k), static_cast<const __half*>(cache.v), batch.pos, batch.seq,
              batch.n_tokens, p.n_head, p.n_head / p.n_head_kv, p.n_head_kv, cache.n_ctx, cache.n_seq, p.scale);
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace

bool flash_attention_supports(const KVLayer& cache, const AttentionParams& p) {
  return cache.type == GGMLType::F16 && (p.head_dim == 64 || p.head_dim == 128);
}

void flash_attention(cudaStream_t s, float* out, const float* q, const KVLayer& cache, const Batch& batch,
                     const AttentionParams& p) {
  QWEN_CHECK(flash_attention_supports(cache, p), "cuda flash attention: ", type_name(cache.type),
             " cache with head_dim ", p.head_dim, " is not supported (F16, head_dim 64 or 128)");
  if (p.head_dim == 64) return launch_flash<64>(s, out, q, cache, batch, p);
  launch_flash<128>(s, out, q, cache, batch, p);
}

}  // namespace qwen::cuda
