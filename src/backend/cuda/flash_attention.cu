// Causal GQA attention on tensor cores (FlashAttention-2 style), the fast path of attention()
// over an F16 or BF16 cache of head_dim 64, 128 or 256 (attention.cu chooses; the exact path
// keeps the fp32 kernel there).
//
// Both kernels stream K and V tiles of kKeys = 64 positions through a double buffer in shared
// memory, filled by cp.async while the previous tile is multiplied, and let each warp own a
// 16-row tile of queries: S = q K^T (mma m16n8k16, fp32 accumulate), keys past a row's last
// position masked, the running max and sum of each row in fp32 (online softmax in base 2 with
// the scale folded into the exponent), P rounded to the cache's 16-bit type H, O += P V in fp32
// (warp_tile). q and P carry H's precision (11 significant bits for fp16, 8 for bf16, that of the
// stored K and V); everything summed is fp32. At head_dim 256 the O accumulators alone take 128
// registers per thread, so q's fragments are read from shared memory at each use (QFragments)
// instead of being held in registers.
//
// Prefill (flash_prefill_kernel): a block takes 64 consecutive tokens of the batch and one query
// head (grid.x = head, so the blocks of one KV group run side by side and share K/V tiles
// through L2); its 4 warps own 16 tokens each and every key of each tile. Tokens of several
// sequences may share a block (continuous batching): the block runs one pass per distinct
// sequence among its tokens over keys [0, max position of that sequence's tokens in the block],
// and a token is masked out of the other passes, so each token sees exactly the keys [0, pos]
// of its own sequence. Tiles wholly past a warp's last position skip the products.
//
// Decode (flash_decode_kernel, flash-decoding): a block takes one token and one KV head; its
// 16-row query tile is the group's query heads (7 of Qwen2.5's 28:4), so each K/V row is loaded
// once for all of them, and each warp takes 16 keys of every tile. The token's keys are cut
// into n_splits equal ranges *on the device*, from pos (the launch shape depends on shapes only,
// so a captured decode graph replays unchanged); a block merges its warps' partial softmax
// states, and with several splits the last block of (token, KV head) to finish merges the
// splits' states (partials in scratch, a counter per (token, KV head) reset by that block).
#include <algorithm>
#include <climits>

#include "backend/cuda/mma.cuh"
#include "backend/cuda/ops.cuh"

namespace qwen::cuda {
namespace {

constexpr int kRows = 64;  // tokens per prefill block
constexpr int kKeys = 64;  // key positions per tile
constexpr int kFlashWarps = 4;
constexpr int kDecodeKeys = kKeys / kFlashWarps;  // keys of a tile per decode warp
constexpr int kMaxFlashSplits = 64;
constexpr int kMinSplitTiles = 4;  // key tiles per flash-decoding split, at least
constexpr float kLog2e = 1.4426950408889634f;

// Row r's 16-byte granule c of a [rows][HD] 16-bit tile sits at granule c ^ (r % 8) of the row:
// the 8 rows an ldmatrix reads at one column then hit 8 different bank groups.
template <int HD>
__device__ __forceinline__ int tile_offset(int r, int c) {
  return r * HD + ((c ^ (r % 8)) * 8);
}

// kStages K/V tile buffers: prefill double-buffers; decode keeps more tiles in flight, since a
// decode block has little to compute per tile and would otherwise wait one round trip per tile.
template <class H, int HD, int kQRows, int kStages>
struct FlashSmem {
  H q[kQRows * HD];
  H k[kStages][kKeys * HD];
  H v[kStages][kKeys * HD];
};
template <int HD>
constexpr int kDecodeStages = HD == 256 ? 3 : 4;  // 200 KB of shared memory at head_dim 256

// One warp's running softmax state for its 16 rows: this thread's rows g and g + 8 (the mma
// accumulator layout), m in base-2 units of the scaled scores, l this thread's share of the sum.
template <int HD>
struct WarpState {
  float o[HD / 8][4];
  float m[2], l[2];
  __device__ void init() {
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.f;
  }
};

// The A fragments of rows 16 w .. 16 w + 15 of the [rows][HD] q tile: loaded once into
// registers up to head_dim 128, read from the tile at each use at 256.
template <class H, int HD>
struct QFragments {
  static constexpr bool kInRegisters = HD <= 128;
  uint32_t regs[kInRegisters ? HD / 16 : 1][4];
  const H* tile;
  int row;
  __device__ __forceinline__ QFragments(const H* q, int w, int lane) : tile(q), row(w * 16 + lane % 16) {
    if constexpr (kInRegisters) {
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk)
        ldmatrix_x4(regs[kk], tile + tile_offset<HD>(row, 2 * kk + lane / 16));
    }
  }
  // Dims 16 kk .. 16 kk + 15.
  __device__ __forceinline__ void get(int kk, int lane, uint32_t (&a)[4]) const {
    if constexpr (kInRegisters) {
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = regs[kk][i];
    } else {
      ldmatrix_x4(a, tile + tile_offset<HD>(row, 2 * kk + lane / 16));
    }
  }
};

// The K and V rows [j0, j0 + kKeys) of one KV head into a tile buffer; rows past `last` are
// zeros (their P is 0, and 0 * garbage could be NaN). Commits one cp.async group.
template <class H, int HD>
__device__ __forceinline__ void load_kv_tile(H* ks, H* vs, const H* kc, const H* vc, int64_t base,
                                             int64_t kv_stride, int j0, int last) {
  constexpr int kGranules = HD / 8;
  for (int i = threadIdx.x; i < kKeys * kGranules; i += blockDim.x) {
    const int r = i / kGranules, c = i % kGranules;
    const int j = j0 + r;
    const int64_t off = base + int64_t(min(j, last)) * kv_stride + c * 8;
    const int bytes = j <= last ? 16 : 0;
    cp_async16(ks + tile_offset<HD>(r, c), kc + off, bytes);
    cp_async16(vs + tile_offset<HD>(r, c), vc + off, bytes);
  }
  cp_async_commit();
}

// The warp's 16 rows against kKeysW keys of a tile (tile rows key0 ..; absolute positions j0 ..):
// S, mask (keys past lim0 / lim1 for rows g / g + 8), online softmax, O += P V.
template <class H, int HD, int kKeysW>
__device__ __forceinline__ void warp_tile(WarpState<HD>& st, const QFragments<H, HD>& qf, const H* ks,
                                          const H* vs, int key0, int j0, int lim0, int lim1, float sl2) {
  const int lane = threadIdx.x % kWarp;
  float s[kKeysW / 8][4];
#pragma unroll
  for (int j = 0; j < kKeysW / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    uint32_t a[4];
    qf.get(kk, lane, a);
#pragma unroll
    for (int jj = 0; jj < kKeysW / 16; ++jj) {
      // Keys 16 jj + (0..15), dims 16 kk + (0..15): B fragments of two 8-key tiles.
      uint32_t b[4];
      const int key = key0 + jj * 16 + (lane / 16) * 8 + lane % 8;
      ldmatrix_x4(b, ks + tile_offset<HD>(key, 2 * kk + (lane / 8) % 2));
      mma16816<H>(s[2 * jj], a, b[0], b[1]);
      mma16816<H>(s[2 * jj + 1], a, b[2], b[3]);
    }
  }
  // Mask, scale to base 2, and the online softmax of rows g (e = 0, 1) and g + 8 (e = 2, 3).
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int j = 0; j < kKeysW / 8; ++j) {
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
    const float m_new = fmaxf(st.m[i], mx[i]);
    m_use[i] = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet stays at zero
    corr[i] = exp2f(st.m[i] - m_use[i]);
    st.m[i] = m_new;
    st.l[i] *= corr[i];
  }
#pragma unroll
  for (int j = 0; j < HD / 8; ++j) {
    st.o[j][0] *= corr[0], st.o[j][1] *= corr[0];
    st.o[j][2] *= corr[1], st.o[j][3] *= corr[1];
  }
  // P in H as A fragments (the accumulator layout of two 8-key tiles is the A layout of one
  // 16-key step), then O += P V.
#pragma unroll
  for (int jj = 0; jj < kKeysW / 16; ++jj) {
    uint32_t pa[4];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float* sj = s[2 * jj + half];
      const float p0 = exp2f(sj[0] - m_use[0]), p1 = exp2f(sj[1] - m_use[0]);
      const float p2 = exp2f(sj[2] - m_use[1]), p3 = exp2f(sj[3] - m_use[1]);
      st.l[0] += p0 + p1;
      st.l[1] += p2 + p3;
      pa[2 * half] = pack2<H>(p0, p1);
      pa[2 * half + 1] = pack2<H>(p2, p3);
    }
#pragma unroll
    for (int dd = 0; dd < HD / 16; ++dd) {
      // Keys 16 jj + (0..15), dims 16 dd + (0..15), transposed into B fragments.
      uint32_t b[4];
      const int key = key0 + jj * 16 + ((lane / 8) % 2) * 8 + lane % 8;
      ldmatrix_x4_trans(b, vs + tile_offset<HD>(key, 2 * dd + lane / 16));
      mma16816<H>(st.o[2 * dd], pa, b[0], b[1]);
      mma16816<H>(st.o[2 * dd + 1], pa, b[2], b[3]);
    }
  }
}

// Row sums of l across the quad that shares each row.
template <int HD>
__device__ __forceinline__ void quad_sum_l(WarpState<HD>& st) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    st.l[i] += __shfl_xor_sync(0xffffffffu, st.l[i], 1);
    st.l[i] += __shfl_xor_sync(0xffffffffu, st.l[i], 2);
  }
}

// q rows (fp32, HD each, `row_ptr(r)` or null for a zero row) into a swizzled tile of H.
template <class H, int HD, class RowPtr>
__device__ __forceinline__ void stage_q(H* qs, int n_rows, const RowPtr& row_ptr) {
  constexpr int kGranules = HD / 8;
  for (int i = threadIdx.x; i < n_rows * kGranules; i += blockDim.x) {
    const int r = i / kGranules, c = i % kGranules;
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (const float* src = row_ptr(r)) {
      const float4 a = reinterpret_cast<const float4*>(src + c * 8)[0];
      const float4 b = reinterpret_cast<const float4*>(src + c * 8)[1];
      packed = make_uint4(pack2<H>(a.x, a.y), pack2<H>(a.z, a.w), pack2<H>(b.x, b.y), pack2<H>(b.z, b.w));
    }
    *reinterpret_cast<uint4*>(qs + tile_offset<HD>(r, c)) = packed;
  }
}

template <class H, int HD>
__global__ void __launch_bounds__(kFlashWarps* kWarp)
    flash_prefill_kernel(float* __restrict__ out, const float* __restrict__ q, const H* __restrict__ kc,
                         const H* __restrict__ vc, const int32_t* __restrict__ pos,
                         const int32_t* __restrict__ seq, int n_tokens, int n_head, int group, int n_kv,
                         int n_ctx, int n_seq, float scale) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto& sm = *reinterpret_cast<FlashSmem<H, HD, kRows, 2>*>(smem_raw);
  __shared__ int s_seq[kRows], s_pos[kRows];
  __shared__ int s_pass, s_kmax;
  pdl_begin();
  const int h = blockIdx.x;
  const int64_t t0 = int64_t(gridDim.y - 1 - blockIdx.y) * kRows;  // longest blocks first
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const int64_t kv_stride = int64_t(n_kv) * HD;

  if (tid < kRows) {
    const int64_t t = t0 + tid;
    const bool active = t < n_tokens;
    s_seq[tid] = active ? (seq ? min(max(seq[t], 0), n_seq - 1) : 0) : INT_MAX;
    s_pos[tid] = active ? min(pos[t], n_ctx - 1) : -1;
  }
  stage_q<H, HD>(sm.q, kRows,
                 [&](int r) { return t0 + r < n_tokens ? q + ((t0 + r) * n_head + h) * HD : nullptr; });
  __syncthreads();
  const QFragments<H, HD> qf(sm.q, warp, lane);

  const int r0 = warp * 16 + lane / 4, r1 = r0 + 8;
  WarpState<HD> st;
  st.init();
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

    const int64_t base = int64_t(cur) * n_ctx * kv_stride + int64_t(h / group) * HD;
    const int n_tiles = kmax / kKeys + 1;
    load_kv_tile<H, HD>(sm.k[0], sm.v[0], kc, vc, base, kv_stride, 0, kmax);
    for (int tile = 0; tile < n_tiles; ++tile) {
      const int buf = tile & 1;
      if (tile + 1 < n_tiles) {
        load_kv_tile<H, HD>(sm.k[buf ^ 1], sm.v[buf ^ 1], kc, vc, base, kv_stride, (tile + 1) * kKeys, kmax);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const int j0 = tile * kKeys;
      if (j0 <= warp_lim) warp_tile<H, HD, kKeys>(st, qf, sm.k[buf], sm.v[buf], 0, j0, lim0, lim1, sl2);
      __syncthreads();  // the buffer is refilled by the next iteration's load
    }
  }

  quad_sum_l(st);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int64_t t = t0 + (i == 0 ? r0 : r1);
    if (t >= n_tokens || st.l[i] == 0.f) continue;
    const float inv = 1.f / st.l[i];
    float* dst = out + (t * n_head + h) * HD + 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < HD / 8; ++j)
      *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(st.o[j][2 * i] * inv, st.o[j][2 * i + 1] * inv);
  }
}

// The last block of (token t, KV head kvh) merges the n_splits partial states of the group's query
// heads in three steps, so that no thread walks a chain of dependent loads through L2: every
// (head, split) max and sum into shared memory; one warp per head turns them into weights
// exp2(m - max) / sum; then each output element is a weighted sum of its splits' partials, whose
// loads are independent. (One thread per element looping over the splits twice, 64 splits deep,
// took 42 us per layer at depth 8,192 on the 0.5B shape.) `ws` holds 2 * 16 * kMaxFlashSplits floats.
template <int HD>
__device__ void merge_splits(float* __restrict__ out, const float* __restrict__ part, float* ws, int64_t t,
                             int kvh, int n_head, int group, int n_splits) {
  float* s_m = ws;                         // [head][split]: max, then weight
  float* s_l = ws + 16 * kMaxFlashSplits;  // [head][split]: sum
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const int64_t th0 = t * n_head + int64_t(kvh) * group;  // the group's first query head
  for (int i = tid; i < group * n_splits; i += blockDim.x) {
    const int r = i / n_splits, sp = i % n_splits;
    const float* pp = part + ((th0 + r) * n_splits + sp) * (HD + 2);
    s_m[r * kMaxFlashSplits + sp] = __ldcg(pp + HD);
    s_l[r * kMaxFlashSplits + sp] = __ldcg(pp + HD + 1);
  }
  __syncthreads();
  for (int r = warp; r < group; r += kFlashWarps) {
    float* m = s_m + r * kMaxFlashSplits;
    const float* l = s_l + r * kMaxFlashSplits;
    float mx = -INFINITY;
    for (int sp = lane; sp < n_splits; sp += kWarp) mx = fmaxf(mx, m[sp]);
    mx = warp_max(mx);
    float sum = 0.f;
    for (int sp = lane; sp < n_splits; sp += kWarp) {
      const float wt = m[sp] == -INFINITY ? 0.f : exp2f(m[sp] - mx);
      m[sp] = wt;  // each lane rewrites only the entries it read
      sum += wt * l[sp];
    }
    sum = warp_sum(sum);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int sp = lane; sp < n_splits; sp += kWarp) m[sp] *= inv;
  }
  __syncthreads();
  // A thread's elements e = e0 + tid + i * threads (kPer of them per pass) load kBatch splits
  // each into registers before any is used, unguarded, so kPer * kBatch loads are in flight per
  // round (a load guarded per element and split is scheduled next to its use). Each element
  // sums its splits in order.
  constexpr int kThreads = kFlashWarps * kWarp, kPer = 4, kBatch = 8;
  const int n_el = group * HD, stride = n_splits * (HD + 2);
  const float* base = part + th0 * stride;
  for (int e0 = 0; e0 < n_el; e0 += kPer * kThreads) {
    int off[kPer], row[kPer];
    float acc[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = min(e0 + tid + i * kThreads, n_el - 1);  // past the end: a duplicate, not stored
      row[i] = e / HD;
      off[i] = row[i] * stride + e % HD;
      acc[i] = 0.f;
    }
    for (int sp0 = 0; sp0 < n_splits; sp0 += kBatch) {
      float v[kBatch][kPer];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int sp = min(sp0 + u, n_splits - 1);
#pragma unroll
        for (int i = 0; i < kPer; ++i) v[u][i] = __ldcg(base + off[i] + sp * (HD + 2));
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
#pragma unroll
        for (int i = 0; i < kPer; ++i)
          if (sp0 + u < n_splits) acc[i] = fmaf(s_m[row[i] * kMaxFlashSplits + sp0 + u], v[u][i], acc[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = e0 + tid + i * kThreads;
      if (e < n_el) out[th0 * HD + e] = acc[i];
    }
  }
}

template <class H, int HD>
__global__ void __launch_bounds__(kFlashWarps* kWarp)
    flash_decode_kernel(float* __restrict__ out, float* __restrict__ part, unsigned* __restrict__ counters,
                        const float* __restrict__ q, const H* __restrict__ kc, const H* __restrict__ vc,
                        const int32_t* __restrict__ pos, const int32_t* __restrict__ seq, int n_head,
                        int group, int n_kv, int n_ctx, int n_seq, float scale, int n_splits) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int kStages = kDecodeStages<HD>;
  auto& sm = *reinterpret_cast<FlashSmem<H, HD, 16, kStages>*>(smem_raw);
  // After the key loop the K buffers hold the warps' states for the merge.
  static_assert(sizeof(float) * kFlashWarps * 16 * HD <= sizeof(sm.k), "merge area");
  static_assert(sizeof(float) * 2 * 16 * kMaxFlashSplits <= sizeof(sm.k), "split merge area");
  float* s_o = reinterpret_cast<float*>(sm.k);  // [warp][row][HD]
  __shared__ float s_m[kFlashWarps][16], s_l[kFlashWarps][16];
  __shared__ bool s_last;
  pdl_begin();
  const int kvh = blockIdx.x, split = blockIdx.z;
  const int64_t t = blockIdx.y;
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const int64_t kv_stride = int64_t(n_kv) * HD;
  const int sq = seq ? min(max(seq[t], 0), n_seq - 1) : 0;
  const int n_keys = min(max(pos[t] + 1, 0), n_ctx);
  const int chunk = (n_keys + n_splits - 1) / n_splits;
  const int start = split * chunk, end = min(start + chunk, n_keys);  // this block's keys

  stage_q<H, HD>(sm.q, 16,
                 [&](int r) { return r < group ? q + (t * n_head + kvh * group + r) * HD : nullptr; });
  __syncthreads();
  const QFragments<H, HD> qf(sm.q, 0, lane);

  const int g = lane / 4;
  const int lim0 = g < group ? end - 1 : -1, lim1 = g + 8 < group ? end - 1 : -1;
  WarpState<HD> st;
  st.init();
  const float sl2 = scale * kLog2e;
  const int64_t base = int64_t(sq) * n_ctx * kv_stride + int64_t(kvh) * HD;
  const int n_tiles = start < end ? (end - start + kKeys - 1) / kKeys : 0;
  // Tile i loads into buffer i % kStages as one cp.async group (an empty group past the last
  // tile), kStages - 1 tiles ahead of the one being multiplied: waiting for all but the newest
  // kStages - 1 groups leaves that one loaded, and the buffer refilled is the one the previous
  // iteration finished with.
  const auto load_tile = [&](int i) {
    if (i < n_tiles) {
      load_kv_tile<H, HD>(sm.k[i % kStages], sm.v[i % kStages], kc, vc, base, kv_stride, start + i * kKeys,
                          end - 1);
    } else {
      cp_async_commit();
    }
  };
  for (int i = 0; i < kStages - 1; ++i) load_tile(i);
  for (int tile = 0; tile < n_tiles; ++tile) {
    const int buf = tile % kStages;
    load_tile(tile + kStages - 1);
    cp_async_wait<kStages - 1>();
    __syncthreads();
    const int j0 = start + tile * kKeys + warp * kDecodeKeys;
    if (j0 < end)
      warp_tile<H, HD, kDecodeKeys>(st, qf, sm.k[buf], sm.v[buf], warp * kDecodeKeys, j0, lim0, lim1, sl2);
    __syncthreads();
  }
  quad_sum_l(st);

  // Merge the warps: every thread stores its o entries, lane % 4 == 0 the row states.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = g + 8 * i;
#pragma unroll
    for (int j = 0; j < HD / 8; ++j) {
      float* d = s_o + (warp * 16 + r) * HD + 8 * j + 2 * (lane % 4);
      d[0] = st.o[j][2 * i], d[1] = st.o[j][2 * i + 1];
    }
    if (lane % 4 == 0) s_m[warp][r] = st.m[i], s_l[warp][r] = st.l[i];
  }
  __syncthreads();
  for (int e = tid; e < group * HD; e += blockDim.x) {
    const int r = e / HD, d = e % HD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kFlashWarps; ++w) mx = fmaxf(mx, s_m[w][r]);
    float a = 0.f, l = 0.f;
#pragma unroll
    for (int w = 0; w < kFlashWarps; ++w) {
      const float wt = s_m[w][r] == -INFINITY ? 0.f : exp2f(s_m[w][r] - mx);
      a += wt * s_o[(w * 16 + r) * HD + d];
      l += wt * s_l[w][r];
    }
    const int64_t th = t * n_head + kvh * group + r;
    if (n_splits == 1) {
      out[th * HD + d] = l > 0.f ? a / l : 0.f;
    } else {
      float* pp = part + (th * n_splits + split) * (HD + 2);
      pp[d] = a;
      if (d == 0) pp[HD] = mx, pp[HD + 1] = l;
    }
  }
  if (n_splits == 1) return;
  // The last split of (token, KV head) to finish merges every split of its heads.
  __threadfence();
  __syncthreads();
  const int64_t tk = t * n_kv + kvh;
  if (tid == 0) s_last = atomicAdd(&counters[tk], 1u) == unsigned(n_splits - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  merge_splits<HD>(out, part, s_o, t, kvh, n_head, group, n_splits);
  if (tid == 0) counters[tk] = 0;
}

template <class H, int HD>
void launch_prefill(cudaStream_t s, float* out, const float* q, const KVLayer& cache, const Batch& batch,
                    const AttentionParams& p) {
  const dim3 grid(unsigned(p.n_head), unsigned(ceil_div(batch.n_tokens, kRows)));
  launch_smem(flash_prefill_kernel<H, HD>, grid, dim3(kFlashWarps * kWarp),
              sizeof(FlashSmem<H, HD, kRows, 2>), s, out, q, static_cast<const H*>(cache.k),
              static_cast<const H*>(cache.v), batch.pos, batch.seq, batch.n_tokens, p.n_head,
              p.n_head / p.n_head_kv, p.n_head_kv, cache.n_ctx, cache.n_seq, p.scale);
  QWEN_CUDA_LAUNCH_CHECK();
}

template <class H, int HD>
void launch_decode(cudaStream_t s, int n_sm, const DecodeScratch& scratch, float* out, const float* q,
                   const KVLayer& cache, const Batch& batch, const AttentionParams& p) {
  // Splits so that (token, KV head, split) blocks fill the GPU about twice, each split at least
  // kMinSplitTiles tiles of the context: every split adds partials for the last block to merge,
  // so splits shorter than that cost more than they save (docs/BENCHMARKS.md, the split sweep).
  // Fixed by shapes only (graph replay).
  const int64_t units = int64_t(batch.n_tokens) * p.n_head_kv;
  int n_splits = int(std::clamp<int64_t>(ceil_div(2 * n_sm, units), 1, kMaxFlashSplits));
  n_splits = std::min(n_splits, std::max(1, cache.n_ctx / (kKeys * kMinSplitTiles)));
  while (n_splits > 1 &&
         int64_t(batch.n_tokens) * p.n_head * n_splits * (p.head_dim + 2) > kAttnPartialFloats)
    --n_splits;
  if (units > kMaxCounters) n_splits = 1;
  const dim3 grid(unsigned(p.n_head_kv), unsigned(batch.n_tokens), unsigned(n_splits));
  launch_smem(flash_decode_kernel<H, HD>, grid, dim3(kFlashWarps * kWarp),
              sizeof(FlashSmem<H, HD, 16, kDecodeStages<HD>>), s, out, scratch.attn_partials,
              scratch.attn_counters, q, static_cast<const H*>(cache.k), static_cast<const H*>(cache.v),
              batch.pos, batch.seq, p.n_head, p.n_head / p.n_head_kv, p.n_head_kv, cache.n_ctx, cache.n_seq,
              p.scale, n_splits);
  QWEN_CUDA_LAUNCH_CHECK();
}

// A prefill block covers 64 tokens and runs one pass per sequence among them, so it pays off when
// runs of one sequence are long; decode-like batches take one block per (token, KV head).
template <class H, int HD>
void launch(cudaStream_t s, int n_sm, const DecodeScratch& scratch, float* out, const float* q,
            const KVLayer& cache, const Batch& batch, const AttentionParams& p) {
  constexpr int kPrefillMinRun = 16;
  if (batch.max_run >= kPrefillMinRun) return launch_prefill<H, HD>(s, out, q, cache, batch, p);
  launch_decode<H, HD>(s, n_sm, scratch, out, q, cache, batch, p);
}

}  // namespace

bool flash_attention_supports(const KVLayer& cache, const AttentionParams& p) {
  return (cache.type == GGMLType::F16 || cache.type == GGMLType::BF16) && attention_head_dim(p.head_dim) &&
         p.n_head / p.n_head_kv <= 16;
}

void flash_attention(cudaStream_t s, int n_sm, const DecodeScratch& scratch, float* out, const float* q,
                     const KVLayer& cache, const Batch& batch, const AttentionParams& p) {
  QWEN_CHECK(flash_attention_supports(cache, p), "cuda flash attention: ", type_name(cache.type),
             " cache with head_dim ", p.head_dim, " and ", p.n_head / p.n_head_kv,
             " query heads per KV head is not supported (F16 or BF16, head_dim 64, 128 or 256, at most 16)");
  dispatch_head_dim(p.head_dim, "flash attention", [&]<int HD>() {
    if (cache.type == GGMLType::F16) return launch<__half, HD>(s, n_sm, scratch, out, q, cache, batch, p);
    launch<__nv_bfloat16, HD>(s, n_sm, scratch, out, q, cache, batch, p);
  });
}

}  // namespace qwen::cuda
