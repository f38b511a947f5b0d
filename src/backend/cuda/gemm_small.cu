// y = W x for a few tokens at once (kGemvMaxTokens < n_tokens <= kSmallMaxTokens): the batched
// decode step of a server with several streams. The GEMV reads each weight row once per token,
// and the cuBLAS path dequantizes the whole matrix to fp16 scratch and runs two GEMM passes every
// step; at 8-64 tokens both are latency- or scratch-bound. Here every weight byte is read from
// DRAM once per step and the products run on tensor cores (mma.sync m16n8k16, fp32 accumulate).
//
// Numerics are those of the cuBLAS prefill path (matmul.cu): a weight is dequantized exactly in
// fp32 and rounded to fp16 once (F16 and BF16 weights are used as stored, BF16 with bf16 mma);
// in exact mode (kLo) activations are split into hi + lo halves of the same 16-bit type and
// both are multiplied, so x keeps ~22 bits (fp16) or ~16 bits (bf16); in fast mode F16 and
// quantized weights take x rounded to fp16 once (half the products, no lo tile). F32 weights
// never come here (cuBLAS SGEMM).
//
// Work split. A block owns kRows = 16 W output rows (W warps, warp w the 16-row mma tile w) and
// all n tokens (NT 8-token tiles), and walks K in 64-column slices. Per slice, thread t loads the
// raw 32-element chunk t % 2 of the block's row t / 2 (one chunk per thread) and a share of the
// x tile (n tokens x 64 columns); at the top of the slice these are written to shared memory,
// the weights dequantized to fp16 and x as 16-bit hi (and lo) halves, and ldmatrix feeds the mma
// fragments of both. A thread keeps the raw weight chunks of kDepth slices in registers (as many
// as its type's packed words allow), refilling each slot as soon as its slice is stored, so up to
// kDepth DRAM round trips overlap instead of one per slice; x (read from L2) is loaded one slice
// ahead. Every block reads all of x: where its fp32 bytes outweigh the weights' (presplit_x), x is
// split into its halves once per launch (split_x, one more launch) instead of by every block.
// Q6_K, Q8_0 and Q4_0 in fast mode up to 16 tokens (int_frags) skip the weight tile: a warp loads
// its 16 rows' quants straight into the A fragments as fp16 integers and scales each sub-block's
// sums after the mma (quant_mma.cuh), so no weight is dequantized or rounded; x is staged in the
// column order that implies.
// Each weight byte is loaded once per launch. A matrix of
// few row blocks (q/k/v, o, the FFN down projection) is split along K over several blocks
// (contiguous slice ranges; the count depends on that matrix alone, so grouping changes no
// result), whose sums the last block to finish adds in split order (deterministic: results do
// not depend on scheduling). One launch may cover up to kMaxGemvGroup matrices that share x
// (q/k/v, gate/up: consecutive block ranges), and a single matrix may add its result into a
// residual.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/mma.cuh"
#include "backend/cuda/ops.cuh"
#include "backend/cuda/quant.cuh"
#include "backend/cuda/quant_mma.cuh"

namespace qwen::cuda {
namespace {

constexpr int kSliceCols = 2 * kChunk;  // K columns per iteration: two chunks
// Halves per tile row: 144 bytes keeps ldmatrix rows 16-byte aligned and conflict-free.
constexpr int kTileStride = kSliceCols + 8;
constexpr int block_threads(int warps) {
  return warps * kWarp;
}

// The 16-bit type of the tensor-core operands: bf16 for BF16 weights, fp16 otherwise.
template <GGMLType T>
using OperandT = std::conditional_t<T == GGMLType::BF16, __nv_bfloat16, __half>;

struct SmallArgs {
  GroupSeg seg[kMaxGemvGroup];
  int n_seg;
  const float* x;   // x [n_tokens][ne0] (kPre: null)
  const void* x16;  // kPre: x as 16-bit hi halves [n_tokens][ne0], then (kLo) the lo halves
  size_t row_bytes;
  int64_t ne0;
  int n_tokens;
  float* resid;  // single matrix only: resid += y after y is stored
  // Split K: segment i's blocks are its row blocks times splits[i] (split fastest). Split y of
  // a row block takes the slices [y per_split[i], (y + 1) per_split[i]); with splits > 1 it
  // stores its sums to partials[block][kPer][threads] and counts itself in counters[the row
  // block's first block]; the last of them adds the splits' sums in split order (so the result
  // does not depend on which block finishes last), writes y and resets the counter.
  int splits[kMaxGemvGroup];
  int per_split[kMaxGemvGroup];
  float* partials;
  unsigned* counters;
};

// Whether a launch of nt 8-token tiles multiplies the weights' integer quants in the A fragments
// (quant_mma.cuh): Q6_K, Q8_0 and Q4_0 in fast mode (x one fp16 pass, split by each block) up to
// 16 tokens. On one H100 they took 1.04-1.58x less time than fp16 tiles at 8 and 16 tokens on the
// 0.5B and 7B layer shapes (0.99x for Q6_K gate/up at 16) and lost at 32 and 64 (0.53-0.86x on
// most 7B matrices, from fewer blocks per SM); Q4_K's fragments lost from 16 tokens and tied at 8
// (docs/BENCHMARKS.md, round 2, ninth session).
constexpr bool int_frags(GGMLType t, bool lo, int nt) {
  return has_int_slice(t) && !lo && nt <= 2;
}

// NT: 8-token mma tiles (n_tokens <= 8 NT; tokens beyond n_tokens multiply zeros). W: warps.
// kLo: x as hi + lo halves (exact mode), else hi only. kPre: x already split (x16), else each
// block splits the fp32 x it loads (the same roundings, so the same tiles).
template <GGMLType T, int NT, int W, bool kLo, bool kPre>
__global__ void __launch_bounds__(block_threads(W), W == 4 ? 3 : 2) gemm_small_kernel(const SmallArgs a) {
  using H = OperandT<T>;
  constexpr bool kInt = int_frags(T, kLo, NT);
  static_assert(!kInt || !kPre, "integer fragments take x from each block's own split");
  // A thread's raw weights per slice: its chunk, or (kInt) its quants of the warp's tile.
  using Raw = std::conditional_t<kInt, IntSlice<T>, ChunkRaw<T>>;
  // Slices of raw weights in flight per thread: about 48 registers of packed words, 20 at 64
  // tokens (whose accumulators and x tile take 64 more); kInt, which refills a slot only after
  // multiplying it, as many as fit without spills: 4 in 4-warp blocks, 2 in 8-warp blocks.
  constexpr int kBudget = NT == 8 ? 20 : 48;
  constexpr int kIntDepth = W == 8 ? 2 : 4;
  constexpr int kDepth = kInt ? kIntDepth : std::clamp(kBudget / Raw::kWords, 1, 4);
  constexpr int kThreads = block_threads(W);
  constexpr int kRows = 16 * W;                         // rows per block
  constexpr int kToks = 8 * NT;                         // token rows of the x tile
  constexpr int kXElems = kPre ? 8 : 4;                 // x elements per load: 8 halves or a float4
  constexpr int kXVecs = kToks * kSliceCols / kXElems;  // loads of an x tile
  constexpr int kXPer = (kXVecs + kThreads - 1) / kThreads;
  static_assert(2 * kRows == kThreads, "one weight chunk per thread and slice");
  __shared__ __align__(16) H wtile[kInt ? 8 : kRows * kTileStride];    // kInt: unused
  __shared__ __align__(16) H xtile[kLo ? 2 : 1][kToks * kTileStride];  // hi (, lo)
  __shared__ bool last_split;
  const int t = threadIdx.x, warp = t / kWarp, lane = t % kWarp;
  const int g = lane / 4, q = lane % 4;  // mma fragment coordinates: group and thread in group
  const unsigned b = blockIdx.x;
  unsigned block0;
  const GroupSeg sg = block_segment(a.seg, a.n_seg, b, block0);
  const int si = segment_of(a.seg, a.n_seg, b);
  const int splits = si == 0 ? a.splits[0] : (si == 1 ? a.splits[1] : a.splits[2]);
  const int per_split = si == 0 ? a.per_split[0] : (si == 1 ? a.per_split[1] : a.per_split[2]);
  const unsigned split = (b - block0) % unsigned(splits), first = b - split;  // first: split 0's block
  const int64_t row0 = int64_t((b - block0) / unsigned(splits)) * kRows;
  const int64_t n_chunks = a.ne0 / kChunk, n_slices = (n_chunks + 1) / 2;
  const int64_t s0 = int64_t(split) * per_split, s1 = min(s0 + per_split, n_slices);
  const int my_row = t / 2, my_chunk = t % 2;
  const uint8_t* wrow = sg.w + min(row0 + my_row, sg.ne1 - 1) * a.row_bytes;  // rows past ne1: not stored
  // kInt: the rows g and g + 8 of the warp's tile.
  const uint8_t* wrow_g = sg.w + min(row0 + warp * 16 + g, sg.ne1 - 1) * a.row_bytes;
  const uint8_t* wrow_g8 = sg.w + min(row0 + warp * 16 + g + 8, sg.ne1 - 1) * a.row_bytes;

  Raw wraw[kDepth];
  uint4 xh[kPre ? (kLo ? 2 : 1) : 1][kXPer];  // kPre: hi (, lo) granules of the next slice
  float4 xf[kPre ? 1 : kXPer];                // else its fp32 x
  const H* x16 = static_cast<const H*>(a.x16);
  const auto load_w = [&](Raw& raw, int64_t s) {
    if constexpr (kInt) {
      raw.load(wrow_g, wrow_g8, s, q, n_chunks);
    } else {
      const int64_t c = 2 * s + my_chunk;
      if (c < n_chunks) load_chunk<T>(raw, wrow, c);
    }
  };
  const auto load_x = [&](int64_t s) {
#pragma unroll
    for (int i = 0; i < kXPer; ++i) {
      const int e = t + i * kThreads, tok = e / (kSliceCols / kXElems);
      const int64_t k = s * kSliceCols + kXElems * (e % (kSliceCols / kXElems));
      const bool in = e < kXVecs && tok < a.n_tokens && k < a.ne0;
      const int64_t o = int64_t(tok) * a.ne0 + k;
      if constexpr (kPre) {
#pragma unroll
        for (int p = 0; p < (kLo ? 2 : 1); ++p) {
          xh[p][i] = make_uint4(0u, 0u, 0u, 0u);  // zeros: 16-bit 0.0 in either type
          if (in) xh[p][i] = *reinterpret_cast<const uint4*>(x16 + int64_t(p) * a.n_tokens * a.ne0 + o);
        }
      } else {
        xf[i] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (in) xf[i] = *reinterpret_cast<const float4*>(a.x + o);
      }
    }
  };
  // Writes the loaded slice s to the tiles: the weight chunk as 16-bit values (F16/BF16 words as
  // stored; kInt: none), x as hi (and lo) halves (kInt: in x_col's order). A chunk past the row's
  // end is not written: its columns are never multiplied.
  const auto store = [&](const Raw& wraw, int64_t s) {
    if constexpr (!kInt) {
      if (2 * s + my_chunk < n_chunks) {
        uint4* dst = reinterpret_cast<uint4*>(wtile + my_row * kTileStride + my_chunk * kChunk);
        if constexpr (T == GGMLType::F16 || T == GGMLType::BF16) {
#pragma unroll
          for (int i = 0; i < 4; ++i)
            dst[i] = make_uint4(wraw.w[4 * i], wraw.w[4 * i + 1], wraw.w[4 * i + 2], wraw.w[4 * i + 3]);
        } else {
          float v[kChunk];
          wraw.decode(v);
#pragma unroll
          for (int i = 0; i < 4; ++i)
            dst[i] = make_uint4(pack2<H>(v[8 * i], v[8 * i + 1]), pack2<H>(v[8 * i + 2], v[8 * i + 3]),
                                pack2<H>(v[8 * i + 4], v[8 * i + 5]), pack2<H>(v[8 * i + 6], v[8 * i + 7]));
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kXPer; ++i) {
      const int e = t + i * kThreads;
      if (e >= kXVecs) continue;
      const int o = (e / (kSliceCols / kXElems)) * kTileStride + kXElems * (e % (kSliceCols / kXElems));
      if constexpr (kInt) {
        // Elements (0, 2) and (1, 3) of the four are column pairs 8 apart.
        const int tok = e / (kSliceCols / kXElems), c = Raw::x_col(kXElems * (e % (kSliceCols / kXElems)));
        const uint32_t h02 = pack2<H>(xf[i].x, xf[i].z), h13 = pack2<H>(xf[i].y, xf[i].w);
        H* row = xtile[0] + tok * kTileStride + c;
        *reinterpret_cast<uint32_t*>(row) = h02;
        *reinterpret_cast<uint32_t*>(row + 8) = h13;
      } else if constexpr (kPre) {
#pragma unroll
        for (int p = 0; p < (kLo ? 2 : 1); ++p) *reinterpret_cast<uint4*>(xtile[p] + o) = xh[p][i];
      } else if constexpr (kLo) {
        uint2 hi, lo;
        split2<H>(xf[i].x, xf[i].y, hi.x, lo.x);
        split2<H>(xf[i].z, xf[i].w, hi.y, lo.y);
        *reinterpret_cast<uint2*>(xtile[0] + o) = hi;
        *reinterpret_cast<uint2*>(xtile[1] + o) = lo;
      } else {
        *reinterpret_cast<uint2*>(xtile[0] + o) =
            make_uint2(pack2<H>(xf[i].x, xf[i].y), pack2<H>(xf[i].z, xf[i].w));
      }
    }
  };

  // kInt: per sub-block of the slice, T = q x on the tensor cores, then acc += d sc T for each row
  // and token (C fragment e: row g + 8 (e / 2), token 2q + e % 2 of its tile).
  const auto mma_int_slice = [&](const auto& w, float(&acc)[NT][4]) {  // generic: kInt only
    using S = std::decay_t<decltype(w)>;
    float fs[S::kSubs][2];
    w.scales(fs);
#pragma unroll
    for (int sb = 0; sb < S::kSubs; ++sb) {
      uint32_t af[S::kSteps][4];
#pragma unroll
      for (int kk = 0; kk < S::kSteps; ++kk) w.frag(sb, kk, af[kk]);
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        const int jt = NT == 1 ? j : j + lane / 16;
        float tt[2][4] = {};
#pragma unroll
        for (int kk = 0; kk < S::kSteps; ++kk) {
          uint32_t bf[4];
          ldmatrix_x4(bf, xtile[0] + (jt * 8 + lane % 8) * kTileStride + (sb * S::kSteps + kk) * 16 +
                              ((lane / 8) % 2) * 8);
          mma16816<H>(tt[0], af[kk], bf[0], bf[1]);
          if constexpr (NT > 1) mma16816<H>(tt[1], af[kk], bf[2], bf[3]);
        }
#pragma unroll
        for (int jj = 0; jj < (NT > 1 ? 2 : 1); ++jj) {
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[j + jj][e] = fmaf(fs[sb][e / 2], tt[jj][e], acc[j + jj][e]);
        }
      }
    }
  };

  float acc[NT][4] = {};
  // Weights are never written by a kernel: the first slices load while the predecessor drains.
#pragma unroll
  for (int d = 0; d < kDepth; ++d)
    if (s0 + d < s1) load_w(wraw[d], s0 + d);
  pdl_begin();
  if (s0 < s1) load_x(s0);
  for (int64_t sb = s0; sb < s1; sb += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      const int64_t s = sb + d;
      if (s >= s1) break;
      __syncthreads();  // every warp is done with the previous slice's tiles
      store(wraw[d], s);
      __syncthreads();
      if constexpr (kInt) {
        // The tensor cores take slice s's quants from slot d, refilled after them (the other
        // slots' slices stay in flight meanwhile); x of the next slice loads first.
        if (s + 1 < s1) load_x(s + 1);
        mma_int_slice(wraw[d], acc);
        if (s + kDepth < s1) load_w(wraw[d], s + kDepth);
        continue;
      }
      // In flight while the tensor cores run: slot d's next slice, and x of the next slice.
      if (s + kDepth < s1) load_w(wraw[d], s + kDepth);
      if (s + 1 < s1) load_x(s + 1);
#pragma unroll
      for (int kk = 0; kk < kSliceCols / 16; ++kk) {
        if (s * kSliceCols + kk * 16 >= a.ne0) break;  // a last slice of one chunk
        uint32_t af[4];
        ldmatrix_x4(af, wtile + (warp * 16 + lane % 16) * kTileStride + kk * 16 + (lane / 16) * 8);
        if constexpr (kLo) {
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            // Lanes 0-7 / 8-15 address the hi tile's rows j*8.. at k and k + 8, lanes 16-31 the lo
            // tile's: the B fragments (b0, b1) of hi and of lo in one ldmatrix.
            uint32_t bf[4];
            ldmatrix_x4(bf,
                        xtile[lane / 16] + (j * 8 + lane % 8) * kTileStride + kk * 16 + ((lane / 8) % 2) * 8);
            mma16816<H>(acc[j], af, bf[0], bf[1]);
            mma16816<H>(acc[j], af, bf[2], bf[3]);
          }
        } else {
#pragma unroll
          for (int j = 0; j < NT; j += 2) {
            // Lanes 0-15 address token tile j at k and k + 8, lanes 16-31 tile j + 1 (j again when
            // NT is 1): the B fragments of two token tiles in one ldmatrix.
            const int jt = NT == 1 ? j : j + lane / 16;
            uint32_t bf[4];
            ldmatrix_x4(bf, xtile[0] + (jt * 8 + lane % 8) * kTileStride + kk * 16 + ((lane / 8) % 2) * 8);
            mma16816<H>(acc[j], af, bf[0], bf[1]);
            if constexpr (NT > 1) mma16816<H>(acc[j + 1], af, bf[2], bf[3]);
          }
        }
      }
    }
  }

  if (splits > 1) {
    constexpr int kPer = NT * 4;  // floats per thread
    float* mine = a.partials + int64_t(b) * kPer * kThreads;
#pragma unroll
    for (int i = 0; i < kPer; ++i) mine[i * kThreads + t] = (&acc[0][0])[i];
    __threadfence();  // the sums are visible before the count that announces them
    __syncthreads();  // every thread's sums, not only thread 0's
    if (t == 0) last_split = atomicAdd(&a.counters[first], 1u) == unsigned(splits) - 1;
    __syncthreads();
    if (!last_split) return;
    __threadfence();  // the other splits' sums are read after their counts
#pragma unroll
    for (int i = 0; i < kPer; ++i) (&acc[0][0])[i] = 0.f;
    for (int k = 0; k < splits; ++k) {
      const volatile float* theirs = a.partials + int64_t(first + k) * kPer * kThreads;
#pragma unroll
      for (int i = 0; i < kPer; ++i) (&acc[0][0])[i] += theirs[i * kThreads + t];
    }
    if (t == 0) a.counters[first] = 0;  // ready for the next launch (graphs replay it)
  }
  // C fragment: e = 0, 1: row g, tokens 2q, 2q + 1; e = 2, 3: row g + 8, same tokens. Per row,
  // bias and residual are read before anything is stored: y might alias them for all the
  // compiler knows, so a read after a store would wait for it (16 round trips to L2 in a row at
  // 64 tokens, instead of one).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row0 + warp * 16 + g + 8 * h;
    if (row >= sg.ne1) continue;
    const float bias = sg.bias ? sg.bias[row] : 0.f;
    const auto token = [&](int j, int e) { return j * 8 + 2 * q + e; };
    float old[NT][2] = {};
    if (a.resid) {
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          if (token(j, e) < a.n_tokens) old[j][e] = a.resid[int64_t(token(j, e)) * sg.ne1 + row];
    }
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        if (token(j, e) >= a.n_tokens) continue;
        const int64_t o = int64_t(token(j, e)) * sg.ne1 + row;
        const float out = acc[j][2 * h + e] + bias;
        sg.y[o] = out;
        if (a.resid) a.resid[o] = old[j][e] + out;  // the arithmetic of add_kernel
      }
    }
  }
}

// The K splits of one matrix of row_blocks blocks: enough for about two blocks per SM (one at
// 64 tokens, whose blocks are heavier and fit only three to an SM: gate and up, each split in
// two, would otherwise exceed one wave), each split at least two slices, at most 16.
int choose_splits(unsigned row_blocks, int64_t n_slices, int n_sm, int nt) {
  const int64_t target = int64_t(nt >= 8 ? 1 : 2) * std::max(n_sm, 1);
  const int64_t want =
      std::max<int64_t>(1, std::min<int64_t>({ceil_div(target, int64_t(row_blocks)), n_slices / 2, 16}));
  return int(ceil_div(n_slices, ceil_div(n_slices, want)));  // as many, but none without slices
}

// 8 warps (128 rows) per block when that still gives two blocks per SM (the lm_head), without
// splits; else 4 warps and each matrix its own K splits (choose_splits), unless the counters or
// the partial-sum scratch would not reach (then none anywhere; no group of these models comes
// near). The warp count changes no result, only which rows share a block.
template <GGMLType T, int NT, bool kLo, bool kPre>
void launch_small(cudaStream_t s, SmallArgs args, const GemvOut* outs, int n, int n_sm) {
  const int64_t n_slices = (args.ne0 / kChunk + 1) / 2;
  const int warps = group_blocks(outs, n, 16 * 8) >= 2u * unsigned(n_sm) ? 8 : 4;
  const int64_t rows = 16 * warps;
  group_segments(outs, n, rows, args.seg, "gemm_small");  // checks; block ranges are set below
  unsigned blocks = 0;
  for (int i = 0; i < n; ++i) {
    const unsigned row_blocks = unsigned(ceil_div(outs[i].w.ne1, rows));
    args.splits[i] = warps == 4 ? choose_splits(row_blocks, n_slices, n_sm, NT) : 1;
    blocks += row_blocks * unsigned(args.splits[i]);
  }
  const int64_t partials = int64_t(blocks) * NT * 4 * block_threads(warps);
  if (blocks > unsigned(kMaxCounters) || partials > kGemmPartialFloats) std::fill_n(args.splits, n, 1);
  blocks = 0;
  for (int i = 0; i < n; ++i) {
    args.per_split[i] = int(ceil_div(n_slices, args.splits[i]));
    blocks += unsigned(ceil_div(outs[i].w.ne1, rows)) * unsigned(args.splits[i]);
    args.seg[i].block_end = blocks;
  }
  if (warps == 8) {
    launch(gemm_small_kernel<T, NT, 8, kLo, kPre>, dim3(blocks), dim3(block_threads(8)), s, args);
  } else {
    launch(gemm_small_kernel<T, NT, 4, kLo, kPre>, dim3(blocks), dim3(block_threads(4)), s, args);
  }
}

// The 8-token tiles of n tokens.
int token_tiles(int n_tokens) {
  return n_tokens <= 8 ? 1 : (n_tokens <= 16 ? 2 : (n_tokens <= 32 ? 4 : 8));
}

template <GGMLType T, int NT, bool kLo>
void launch_x(cudaStream_t s, const SmallArgs& args, const GemvOut* outs, int n, int n_sm) {
  if constexpr (!int_frags(T, kLo, NT)) {
    if (args.x16) return launch_small<T, NT, kLo, true>(s, args, outs, n, n_sm);
  }
  launch_small<T, NT, kLo, false>(s, args, outs, n, n_sm);
}

template <GGMLType T, bool kLo>
void launch_tokens(cudaStream_t s, const SmallArgs& args, const GemvOut* outs, int n, int n_sm) {
  switch (token_tiles(args.n_tokens)) {
    case 1:
      return launch_x<T, 1, kLo>(s, args, outs, n, n_sm);
    case 2:
      return launch_x<T, 2, kLo>(s, args, outs, n, n_sm);
    case 4:
      return launch_x<T, 4, kLo>(s, args, outs, n, n_sm);
    default:
      return launch_x<T, 8, kLo>(s, args, outs, n, n_sm);
  }
}

// Whether a gemm_small launch has x split once (split_x) rather than by each block. Every block
// reads all of x: a 64-row block's fp32 x is 4 n_tokens / (64 b) times its weight bytes, b the
// bytes per weight (Q4_K 0.56, Q8_0 1.06, F16 2). On the 7B shape (H100, qwen-opbench at 16 and 64
// tokens) the extra launch won from about 1.5 times on (Q4_K at 16 tokens, Q8_0 and F16 at 64;
// Q8_0 at 16 lost, 0.87-0.98x) and for BF16, whose blocks split x into two halves, at both; it
// lost on every matrix under 4 MB (k/v: 0.76-0.96x) and on the 0.5B file at 8 and 64 tokens
// (docs/BENCHMARKS.md, round 2, seventh session). Never for integer fragments (int_frags), whose
// blocks stage x in their own column order as they split it.
constexpr double kPresplitMinRatio = 1.5;
constexpr size_t kPresplitMinBytes = size_t(6) << 20;
bool presplit_x(const GemvOut* outs, int n, int n_tokens, bool two_pass) {
  if (outs[0].w.ne0 > kSmallMaxCols || int_frags(outs[0].w.type, two_pass, token_tiles(n_tokens)))
    return false;
  size_t bytes = 0;
  for (int i = 0; i < n; ++i) bytes += size_t(outs[i].w.ne1) * outs[i].w.row_bytes();
  const double per_weight = double(outs[0].w.row_bytes()) / double(outs[0].w.ne0);
  return bytes >= kPresplitMinBytes && (two_pass || 4.0 * n_tokens / (64 * per_weight) >= kPresplitMinRatio);
}

}  // namespace

void gemm_small(cudaStream_t s, const DecodeScratch& scratch, const GemvOut* outs, int n, const float* x,
                int n_tokens, float* resid, int n_sm, bool exact) {
  QWEN_CHECK(n_tokens >= 1 && n_tokens <= kSmallMaxTokens, "cuda gemm_small: ", n_tokens, " tokens (1..",
             kSmallMaxTokens, ")");
  QWEN_CHECK(n == 1 || !resid, "cuda gemm_small: a group of ", n, " matrices takes no residual epilogue");
  SmallArgs args{};
  const Weight& w = outs[0].w;
  QWEN_CHECK(w.type != GGMLType::F32, "cuda gemm_small: F32 weights go through SGEMM");
  const bool bf16 = w.type == GGMLType::BF16, two_pass = exact || bf16;
  if (presplit_x(outs, n, n_tokens, two_pass)) {
    // x split once into the 16-bit halves every block multiplies (lo only when two passes run).
    const int64_t nx = int64_t(n_tokens) * w.ne0;
    split_x(s, bf16, scratch.gemm_x16, two_pass ? static_cast<char*>(scratch.gemm_x16) + 2 * nx : nullptr, x,
            nx);
    args.x16 = scratch.gemm_x16;
  } else {
    args.x = x;
  }
  args.n_seg = n;
  args.row_bytes = w.row_bytes();
  args.ne0 = w.ne0;
  args.n_tokens = n_tokens;
  args.resid = resid;
  args.partials = scratch.gemm_partials;
  args.counters = scratch.gemm_counters;
  dispatch_type(w.type, "matmul", [&]<GGMLType T>() {
    // BF16 keeps both halves in either mode (bf16 x alone would keep 8 bits).
    if constexpr (T != GGMLType::F32) {
      if (two_pass) {
        launch_tokens<T, true>(s, args, outs, n, n_sm);
      } else if constexpr (T != GGMLType::BF16) {
        launch_tokens<T, false>(s, args, outs, n, n_sm);
      }
    }
  });
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace qwen::cuda
