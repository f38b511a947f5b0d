// y = W x for a weight W in its GGUF type: y [n_tokens][ne1], x [n_tokens][ne0] (fp32).
//
// Decode (n_tokens <= kGemvMaxTokens): each warp computes 1 to 4 output rows; each lane loads
// whole 32-element chunks of them, decodes them in registers and accumulates in fp32 against x,
// then a warp reduction per row. In fast mode Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q5_K take
// gemv_dot_kernel instead: x quantized to 16 bits, integer dot products per weight unit
// (quant_dot.cuh). The backend may fuse the following residual add into either, launch the GEMVs
// that share x as one grid (q/k/v), and compute gate and up rows together with SwiGLU
// (gemv_swiglu).
//
// 5..64 tokens (batched decode of several streams, short prompts) go to gemm_small.cu instead
// (the backend routes them), except F32 weights.
//
// Prefill: cuBLAS tensor-core GEMM with fp32 accumulation. The cuBLAS layout, written once
// (ARCHITECTURE §Rules 4): GGUF stores W row-major [ne1][ne0], which column-major cuBLAS sees as W^T with
// ld = ne0, so y = W·x is gemm(OP_T, OP_N, m = ne1, n = n_tokens, k = ne0, A = W, lda = ne0,
// B = x, ldb = ne0, C = y, ldc = ne1).
// Precision: F16 / BF16 weights are used as stored (exact). Quantized weights are dequantized,
// a tile of rows at a time, into fp16 scratch: d*q needs up to 18 mantissa bits, so this rounds
// the weight by <= 2^-11 relative (only on the prefill path; GEMV decodes exactly in fp32).
// Activations: in exact mode (the parity tools' and tests' default) x is split into two 16-bit
// halves x = hi + lo multiplied in two passes, so x keeps ~22 bits (fp16) or ~16 bits (bf16)
// instead of 11 or 8. In fast mode (the apps' default) F16 and quantized weights take one pass
// with x rounded to fp16 (2^-12 relative), the same order as the weights' own rounding to fp16
// for quantized types; BF16 weights keep both passes in either mode (bf16 x alone would keep 8
// bits). fp16 halves hold |x| < 65504; the inputs of these matmuls are normalized activations,
// attention outputs and SwiGLU products, far below that in the models we run, while the
// residual stream itself never goes through fp16.
// F32 weights go through plain SGEMM.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "backend/cuda/ops.cuh"
#include "backend/cuda/quant.cuh"
#include "backend/cuda/quant_dot.cuh"

namespace qwen::cuda {
namespace {

constexpr int kGemvThreads = 256;  // 8 warps, each computing kRows rows
constexpr int kGemvWarps = kGemvThreads / kWarp;
constexpr int64_t kTileElems = int64_t(32) << 20;  // dequantized weight tile: 32 Mi fp16 = 64 MiB

struct GemvArgs {
  GroupSeg seg[kMaxGemvGroup];
  int n_seg;
  size_t row_bytes;
  const float* x;
  int64_t ne0;
  GemvFusion f;
};

// What a GEMV launch computes besides y = W x (see gemv_kernel).
enum class GemvMode { Plain, Pair, Deep };
// Chunks each lane of a Deep GEMV loads before using the first.
constexpr int kDeepChunks = 4;
// Rows per warp (kRows) are 4, 2 or 1; a lane holds kRows raw chunks per matrix, at most
// kRawWords registers of them (see choose_rows): Q8_0 and Q4_0 take 4 rows (2 for the gate/up
// pair), F16 2 (1). A budget of 40 gave the Q4_0 pair 4 rows (128 registers, 152 blocks of which
// only 2 fit an SM): 1,024 tok/s with a 129-position KV cache but 874 with 513 positions under
// programmatic dependent launch (941 without it), where 2 rows gave 918 and 967 (H100, tg128).
constexpr int kMaxRows = 4;
constexpr int kRawWords = 36;

// x of one token in shared memory, chunk c's 16-byte granule i at granule 8c + (i ^ (c % 8)):
// the 8 lanes of a quarter warp, which read the same granule of consecutive chunks, then hit
// 8 different bank groups. Read from global memory instead, lane L's 128 bytes at a 128-byte
// stride made every LDG.128 of x touch 32 cache lines, more L1 wavefronts than the weights.
__device__ __forceinline__ int swizzle(int64_t c, int i) {
  return int(8 * c) + (i ^ int(c % 8));
}
__device__ __forceinline__ void stage_x(float4* xsm, const float* x, int64_t ne0) {
  const float4* xv = reinterpret_cast<const float4*>(x);
  for (int64_t g = threadIdx.x; g < ne0 / 4; g += blockDim.x) xsm[swizzle(g / 8, int(g % 8))] = xv[g];
  __syncthreads();
}
__device__ __forceinline__ void load_x_smem(const float4* xsm, int64_t c, float xs[kChunk]) {
#pragma unroll
  for (int i = 0; i < kChunk / 4; ++i) {
    const float4 xv = xsm[swizzle(c, i)];
    xs[4 * i] = xv.x, xs[4 * i + 1] = xv.y, xs[4 * i + 2] = xv.z, xs[4 * i + 3] = xv.w;
  }
}

// acc += dot(v, xs) in index order: every mode and row count runs this same sequence of fmaf
// per row, so they all give one result.
__device__ __forceinline__ void dot_chunk(const float v[kChunk], const float xs[kChunk], float& acc) {
#pragma unroll
  for (int k = 0; k < kChunk; ++k) acc = fmaf(v[k], xs[k], acc);
}

// The end of a GEMV warp: the warp sum of each row's lane partials acc, then lane i stores row
// row0 + i of token t (bias, and gate/up/SwiGLU for two matrices or the residual epilogue).
template <int kMats, int kRows>
__device__ __forceinline__ void store_rows(const GemvArgs& a, const GroupSeg& sg, int64_t row0, int64_t t,
                                           float (&acc)[kMats][kRows]) {
  const int lane = threadIdx.x % kWarp;
#pragma unroll
  for (int m = 0; m < kMats; ++m) {
#pragma unroll
    for (int i = 0; i < kRows; ++i) acc[m][i] = warp_sum(acc[m][i]);
  }
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int64_t row = row0 + i;
    if (lane != i || row >= sg.ne1) continue;
    const int64_t o = t * sg.ne1 + row;
    const float out = acc[0][i] + (sg.bias ? sg.bias[row] : 0.f);
    sg.y[o] = out;
    if constexpr (kMats == 2) {
      const float up = acc[1][i] + (a.seg[1].bias ? a.seg[1].bias[row] : 0.f);
      a.seg[1].y[o] = up;
      a.f.glu_out[o] = out / (1.f + expf(-out)) * up;  // the arithmetic of swiglu_kernel
    } else if (a.f.resid) {
      a.f.resid[o] += out;
    }
  }
}

// Decode GEMV: each warp computes kRows consecutive rows (of both matrices in Pair mode); lane L
// takes chunks c = L, L + 32, ... of each of them, accumulates each row in that order in fp32,
// then a warp sum per row. A lane first loads the raw chunks of all its rows (ChunkRaw: the
// packed words, Q8_0 9 registers a chunk), then decodes them one at a time against its chunk of
// x, which it loads once for all rows. More rows per warp put more independent loads in flight
// per lane and read x fewer times; the host picks kRows (choose_rows) so that the grid still
// covers the SMs. (Splitting long rows over several warps measured slower: the extra blocks need
// a second wave, and these kernels are latency-bound.) One launch may cover up to kMaxGemvGroup
// matrices that share x (segments of consecutive blocks; a block's segment is uniform, so every
// warp runs the single-matrix arithmetic). Modes:
//  Pair: segments 0 (gate) and 1 (up) have the same rows; each warp computes its rows of both
//        and stores gate, up and f.glu_out = silu(gate) * up;
//  Deep: long rows in a grid of at most one block per SM (kRows = 1): each lane loads
//        kDeepChunks chunks of its row before using the first, so one DRAM round trip serves up
//        to 4 chunks (same accumulation order, so the same result).
// Plain and Deep apply the optional epilogue resid += y (single matrix only). (A grid of only as
// many blocks as fit the SMs, each staging x once and walking several blocks' rows, measured
// slower: tg128 --exact 7B Q4_K_M 240 vs 248 tok/s, 0.5B Q8_0 1,246 vs 1,271.)
template <GGMLType T, GemvMode M, int kRows>
__global__ void __launch_bounds__(kGemvThreads, kRows > 1 ? 2 : 1) gemv_kernel(const GemvArgs a) {
  static_assert(kRows == 1 || M != GemvMode::Deep, "several rows per warp: Plain or Pair");
  constexpr int kMats = M == GemvMode::Pair ? 2 : 1;
  constexpr int kDepth = M == GemvMode::Deep ? kDeepChunks : 1;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  // Pair: both segments span the whole grid, so every block is in segment 0 (gate).
  unsigned block0;
  const GroupSeg sg = block_segment(a.seg, a.n_seg, blockIdx.x, block0);
  const int64_t row0 = (int64_t(blockIdx.x - block0) * kGemvWarps + warp) * kRows;
  const int64_t t = blockIdx.y;
  const int64_t n_chunks = a.ne0 / kChunk;
  // Rows past the end load the last row; their results are not stored.
  const uint8_t* w[kMats];
  w[0] = sg.w;
  if constexpr (kMats == 2) w[1] = a.seg[1].w;
  ChunkRaw<T> raw[kDepth][kMats][kRows];
  const auto load = [&](int64_t c) {
#pragma unroll
    for (int j = 0; j < kDepth; ++j) {
      const int64_t cj = c + j * kWarp;
      if (cj >= n_chunks) continue;
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
#pragma unroll
        for (int i = 0; i < kRows; ++i)
          load_chunk<T>(raw[j][m][i], w[m] + min(row0 + i, sg.ne1 - 1) * a.row_bytes, cj);
      }
    }
  };
  // The first chunks of weights are loaded before waiting for the previous kernel: weights are
  // never written by a kernel, so their DRAM latency overlaps the predecessor's tail.
  load(lane);
  pdl_begin();
  const float* xt = a.x + t * a.ne0;
  extern __shared__ float4 xsm[];
  stage_x(xsm, xt, a.ne0);
  float acc[kMats][kRows] = {};
  for (int64_t c = lane; c < n_chunks; c += kDepth * kWarp) {
    if (c != lane) load(c);
#pragma unroll
    for (int j = 0; j < kDepth; ++j) {
      const int64_t cj = c + j * kWarp;
      if (cj >= n_chunks) continue;
      float xs[kChunk];
      load_x_smem(xsm, cj, xs);
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
#pragma unroll
        for (int i = 0; i < kRows; ++i) {
          float v[kChunk];
          raw[j][m][i].decode(v);
          dot_chunk(v, xs, acc[m][i]);
        }
      }
    }
  }
  store_rows<kMats, kRows>(a, sg, row0, t, acc);
}

// x of token t quantized into shared memory for gemv_dot_kernel (quant_dot.cuh): each warp
// takes 128 elements (4 blocks of 32) at a time, lane L elements 4L .. 4L + 3, the 8 lanes of a
// block sharing its amax (integer max of |x|'s bits, so a NaN wins and its outputs are NaN). The
// loads of kBatch such groups are issued before any is used.
__device__ __forceinline__ void stage_xq(const XqRow& q, const float* x, int64_t ne0) {
  constexpr int kBatch = 4;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, n_warps = blockDim.x / kWarp;
  const int64_t n_groups = ne0 / 128;  // ne0 is a multiple of 128 for every type with a UnitDot
  const float4* xv = reinterpret_cast<const float4*>(x);
  for (int64_t g0 = warp; g0 < n_groups; g0 += int64_t(kBatch) * n_warps) {
    float4 v[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int64_t g = g0 + int64_t(k) * n_warps;
      if (g < n_groups) v[k] = xv[32 * g + lane];
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int64_t g = g0 + int64_t(k) * n_warps;
      if (g >= n_groups) break;
      const float e[4] = {v[k].x, v[k].y, v[k].z, v[k].w};
      unsigned m = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i) m = max(m, __float_as_uint(fabsf(e[i])));
#pragma unroll
      for (int o = 4; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
      const float amax = __uint_as_float(m);
      uint32_t wh = 0, wl = 0;
      int sum = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        int h, l;
        xq_quantize(e[i], amax, h, l);
        wh |= uint32_t(uint8_t(h)) << (8 * i);
        wl |= uint32_t(uint8_t(l)) << (8 * i);
        sum += 256 * h + l;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int64_t word = 32 * g + lane;  // elements 4 word .. 4 word + 3
      q.h[word] = wh;
      q.l[word] = wl;
      if (lane % 4 == 0) q.isum[word / 4] = sum;
      if (lane % 8 == 0) q.sc[word / 8] = xq_scale(amax);
    }
  }
  __syncthreads();
}

// Fast decode GEMV (GemvFusion::fast, types with a UnitDot): the rows of gemv_kernel (kRows rows
// per warp, of both matrices in Pair mode, a warp sum per row, the same epilogue), but x is
// quantized to 16 bits in shared memory and each lane takes weight units (64 or 32 elements) and
// their integer dot products (quant_dot.cuh). The grid has as many blocks as fit the SMs at once
// (walk_blocks): each quantizes x once and walks the virtual blocks (gemv_kernel's blocks of rows)
// blockIdx.x, + gridDim.x, ...; a lane loads its next unit (of the next virtual block after its
// last) before it computes the current one. A block takes up to kTok tokens (blockIdx.y * kTok
// onwards): each unit, once loaded, is multiplied by the x of each of them, where gemv_kernel
// reads the weights once per token.
template <GGMLType T, GemvMode M, int kRows, int kTok>
__global__ void __launch_bounds__(kGemvThreads, 2)
    gemv_dot_kernel(const GemvArgs a, unsigned n_vblocks, int n_tokens) {
  static_assert(M != GemvMode::Deep, "Plain or Pair");
  using U = UnitDot<T>;
  constexpr int kMats = M == GemvMode::Pair ? 2 : 1;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t t0 = int64_t(blockIdx.y) * kTok;
  const int nt = min(kTok, n_tokens - int(t0));
  const int64_t n_units = a.ne0 / U::kElems;
  const int64_t per_vb = lane < n_units ? (n_units - lane + kWarp - 1) / kWarp : 0;  // this lane's units
  // The rows of virtual block vb: its segment, first row and row pointers (rows past the end
  // point at the last row; their results are not stored).
  struct Rows {
    GroupSeg sg;
    int64_t row0;
    const uint8_t* w[kMats][kRows];
  };
  const auto rows_of = [&](unsigned vb) {
    Rows r;
    unsigned block0;
    r.sg = block_segment(a.seg, a.n_seg, vb, block0);
    r.row0 = (int64_t(vb - block0) * kGemvWarps + warp) * kRows;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int64_t off = min(r.row0 + i, r.sg.ne1 - 1) * int64_t(a.row_bytes);
      r.w[0][i] = r.sg.w + off;
      if constexpr (kMats == 2) r.w[1][i] = a.seg[1].w + off;
    }
    return r;
  };
  U cur[kMats][kRows], next[kMats][kRows];
  const auto load = [&](U(&dst)[kMats][kRows], const Rows& r, int64_t u) {
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
#pragma unroll
      for (int i = 0; i < kRows; ++i) dst[m][i].load(r.w[m][i], u);
    }
  };
  unsigned vb = blockIdx.x;
  Rows rows = rows_of(vb);
  // Weights are never written by a kernel: their first loads overlap the predecessor's tail.
  if (per_vb > 0) load(cur, rows, lane);
  pdl_begin();
  extern __shared__ uint4 xq_smem[];
  XqRow xq[kTok];
#pragma unroll
  for (int k = 0; k < kTok; ++k) {
    xq[k] = XqRow::carve(reinterpret_cast<uint8_t*>(xq_smem) + k * XqRow::bytes(a.ne0), a.ne0);
    if (k < nt) stage_xq(xq[k], a.x + (t0 + k) * a.ne0, a.ne0);
  }
  while (vb < n_vblocks) {
    const unsigned vb_next = vb + gridDim.x;
    const bool more_vb = vb_next < n_vblocks;
    const Rows rows_next = more_vb ? rows_of(vb_next) : rows;
    float acc[kTok][kMats][kRows] = {};
    for (int64_t j = 0; j < per_vb; ++j) {
      const int64_t u = lane + j * kWarp;
      if (j + 1 < per_vb) {
        load(next, rows, u + kWarp);
      } else if (more_vb) {
        load(next, rows_next, lane);
      }
#pragma unroll
      for (int k = 0; k < kTok; ++k) {
        if (k >= nt) break;
        Xq16 xp[U::kPieces];
        U::load_x(xq[k], u, xp);
#pragma unroll
        for (int m = 0; m < kMats; ++m) {
#pragma unroll
          for (int i = 0; i < kRows; ++i) acc[k][m][i] += cur[m][i].dot(xp);
        }
      }
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
#pragma unroll
        for (int i = 0; i < kRows; ++i) cur[m][i] = next[m][i];
      }
    }
#pragma unroll
    for (int k = 0; k < kTok; ++k) {
      if (k < nt) store_rows<kMats, kRows>(a, rows.sg, rows.row0, t0 + k, acc[k]);
    }
    vb = vb_next;
    rows = rows_next;
  }
}

// out [n_rows][ne0] fp16 = dequant(rows [row0, row0 + n_rows) of W). A warp converts 32
// consecutive chunks of one row (a lane each) and stages them in shared memory, so that each
// store instruction writes 512 contiguous bytes instead of 16 bytes at a 64-byte stride per lane.
// Staging granule j of chunk L sits at 4L + (j ^ ((L >> 1) & 3)): the 8 lanes of a quarter warp
// then write 8 different bank groups, and 8 consecutive granules read back do too.
constexpr int kDequantWarps = 8;
__device__ __forceinline__ int stage_slot(int chunk, int j) {
  return 4 * chunk + (j ^ ((chunk >> 1) & 3));
}
template <GGMLType T>
__global__ void __launch_bounds__(kDequantWarps * kWarp) dequant_f16_kernel(__half* __restrict__ out,
                                                                          const uint8_t* __restrict__ w,
                                                                          size_t row_bytes, int64_t ne0,
                                                                          int64_t row0, int64_t n_rows) {
  __shared__ uint4 stage[kDequantWarps][kWarp * 4];  // 32 chunks x 64 bytes per warp
  pdl_begin();
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t n_chunks = ne0 / kChunk, groups = (n_chunks + kWarp - 1) / kWarp;
  const int64_t g = int64_t(blockIdx.x) * kDequantWarps + warp;
  if (g >= n_rows * groups) return;  // uniform over the warp
  const int64_t r = g / groups, c0 = (g % groups) * kWarp;
  const int nc = int(min(int64_t(kWarp), n_chunks - c0));
  uint4* st = stage[warp];
  if (lane < nc) {
    float v[kChunk];
    dequant_chunk<T>(w + (row0 + r) * row_bytes, c0 + lane, v);
#pragma unroll
    for (int j = 0; j < kChunk / 8; ++j) {
      __half2 h[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(v[8 * j + 2 * k], v[8 * j + 2 * k + 1]);
      st[stage_slot(lane, j)] = *reinterpret_cast<uint4*>(h);
    }
  }
  __syncwarp();
  uint4* o = reinterpret_cast<uint4*>(out + r * ne0 + c0 * kChunk);
  for (int k = lane; k < 4 * nc; k += kWarp) o[k] = st[stage_slot(k / 4, k % 4)];
}

// hi = round(x), lo = round(x - hi) in fp16 (Half = __half) or bf16 (Half = __nv_bfloat16);
// lo == nullptr: hi only (fast mode's single pass).
template <class Half>
__global__ void split_kernel(Half* __restrict__ hi, Half* __restrict__ lo, const float* __restrict__ x,
                             int64_t n) {
  pdl_begin();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  Half h, l;
  if constexpr (std::is_same_v<Half, __half>) {
    h = __float2half_rn(v);
    l = __float2half_rn(v - __half2float(h));
  } else {
    h = __float2bfloat16_rn(v);
    l = __float2bfloat16_rn(v - __bfloat162float(h));
  }
  hi[i] = h;
  if (lo) lo[i] = l;
}

// y[t][o] += bias[o]
__global__ void bias_kernel(float* __restrict__ y, const float* __restrict__ bias, int64_t ne1, int64_t n) {
  pdl_begin();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] += bias[i % ne1];
}

void check_weight(const Weight& w, const char* op) {
  QWEN_CHECK(w.ne0 % kChunk == 0, "cuda ", op, ": weight row length ne0 = ", w.ne0,
             " is not a multiple of 32 (type ", type_name(w.type), ")");
  QWEN_CHECK(reinterpret_cast<uintptr_t>(w.data) % 16 == 0, "cuda ", op,
             ": weight data is not 16-byte aligned (type ", type_name(w.type), ", ", w.ne1, "x", w.ne0, ")");
}

// (Re)allocates a scratch buffer to at least `bytes`. Only legal outside stream capture: the
// first prefill sizes it, decode (captured) never reaches here.
void ensure(cudaStream_t s, void*& p, size_t& have, size_t bytes, const char* what) {
  if (have >= bytes) return;
  cudaStreamCaptureStatus st;
  QWEN_CUDA_CHECK(cudaStreamIsCapturing(s, &st));
  QWEN_CHECK(st == cudaStreamCaptureStatusNone, "cuda matmul: ", what, " scratch must grow to ", bytes,
             " bytes during graph capture; run one prefill of this size before capturing");
  QWEN_CUDA_CHECK(cudaStreamSynchronize(s));
  if (p) QWEN_CUDA_CHECK(cudaFree(p));
  p = nullptr;
  have = 0;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    QWEN_FAIL("cuda matmul: cannot allocate ", bytes, " bytes of ", what, " scratch (", free_b,
              " bytes free of ", total_b, ")");
  }
  have = bytes;
}

// Rows per dequantized tile: the matrix split evenly into tiles of at most kTileElems, rounded
// up to a multiple of kTileAlign rows. Every tile then starts y at a 16-byte aligned row and has
// a round M, which lets cuBLAS take its sm_90 kernels: 9,362-row tiles (as many as fit) sent the
// 7B gate projection to an sm_80 kernel at 150 TFLOP/s and ffn_down (1,771 rows) to an sm_75
// "align1" kernel at 74 TFLOP/s, where the untiled F16 matrices ran at ~500 (H100, ncu).
constexpr int64_t kTileAlign = 256;
int64_t tile_rows_of(int64_t ne1, int64_t ne0) {
  const int64_t max_rows = std::max<int64_t>(kTileAlign, kTileElems / ne0 / kTileAlign * kTileAlign);
  const int64_t tiles = ceil_div(ne1, max_rows);
  return std::min(ne1, ceil_div(ceil_div(ne1, tiles), kTileAlign) * kTileAlign);
}

// C[m x n] (+)= A^T B with A = W tile (k x m col-major, lda = k) and B = x (k x n, ldb = k).
void gemm_ex(cublasHandle_t blas, cudaDataType_t type, int64_t m, int64_t n, int64_t k, const void* a,
             const void* b, float beta, float* c, int64_t ldc) {
  const float alpha = 1.f;
  QWEN_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(k), &alpha, a, type,
                                 int(k), b, type, int(k), &beta, c, CUDA_R_32F, int(ldc), CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
}

// Registers of a lane's raw weights per row: ChunkRaw chunks for gemv_kernel, kRawWords in all;
// UnitDot units for gemv_dot_kernel (kDot), kDotWords in all, of which it holds two sets (the
// current units and the next).
constexpr int kDotWords = 26;
template <GGMLType T, bool kDot>
constexpr int raw_words() {
  if constexpr (kDot && has_unit_dot(T)) {
    return UnitDot<T>::kWords;
  } else {
    return ChunkRaw<T>::kWords;
  }
}
constexpr int raw_budget(bool dot) {
  return dot ? kDotWords : kRawWords;
}

// Rows per warp of a GEMV over `mats` matrices at once (2: gate and up) of type T: the most of
// kMaxRows, 2 and 1 whose raw weights (rows * mats per lane) fit the register budget and whose
// grid, blocks(rows) blocks, still has min_blocks (the SM count; 0: one row per warp always).
// Fewer blocks than SMs would leave SMs idle in these latency-bound launches.
template <GGMLType T, bool kDot, class Blocks>
int choose_rows(int mats, int min_blocks, const Blocks& blocks) {
  for (int rows = kMaxRows; rows > 1; rows /= 2) {
    if (min_blocks > 0 && rows * mats * raw_words<T, kDot>() <= raw_budget(kDot) &&
        blocks(rows) >= unsigned(min_blocks))
      return rows;
  }
  return 1;
}

// Shared memory of a GEMV: x of one token, fp32 (stage_x) or quantized (stage_xq, kDot).
constexpr size_t kGemvMaxSmem = 227 * 1024;  // an sm_90 block's shared memory
size_t gemv_smem_bytes(const GemvArgs& a, bool dot) {
  const size_t bytes = dot ? XqRow::bytes(a.ne0) : size_t(a.ne0) * sizeof(float);
  QWEN_CHECK(bytes <= kGemvMaxSmem, "cuda gemv: rows of ", a.ne0, " elements need ", bytes,
             " bytes of shared memory for x, more than the ", kGemvMaxSmem, " a block may have");
  return bytes;
}

// The grid of a GEMV over n_vblocks virtual blocks: as many blocks as fit the SMs at once (each
// stages x once), at most n_vblocks; n_vblocks when the SM count is not given (0). The blocks per
// SM of a (device, kernel, shared memory) are asked of the runtime once per host thread, not at
// every launch of an eager decode step.
template <class Kernel>
unsigned walk_blocks(Kernel kernel, size_t smem, int n_sm, unsigned n_vblocks) {
  if (n_sm <= 0) return n_vblocks;
  struct Fit {
    int device;
    const void* kernel;
    size_t smem;
    int per_sm;
  };
  thread_local std::vector<Fit> fits;
  int device = 0;
  QWEN_CUDA_CHECK(cudaGetDevice(&device));
  const void* k = reinterpret_cast<const void*>(kernel);
  auto it = std::find_if(fits.begin(), fits.end(),
                         [&](const Fit& f) { return f.device == device && f.kernel == k && f.smem == smem; });
  if (it == fits.end()) {
    if (smem > 48 * 1024)
      QWEN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    int per_sm = 0;
    QWEN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kGemvThreads, smem));
    it = fits.insert(fits.end(), Fit{device, k, smem, std::max(per_sm, 1)});
  }
  return std::min(n_vblocks, unsigned(it->per_sm * n_sm));
}

// Launches a GEMV kernel over grid.x virtual blocks (walk_blocks).
template <class Kernel, class... Extra>
void launch_walk(Kernel kernel, dim3 grid, size_t smem, cudaStream_t s, const GemvArgs& args,
                 Extra... extra) {
  dim3 g = grid;
  g.x = walk_blocks(kernel, smem, args.f.n_sm, grid.x);
  launch_smem(kernel, g, dim3(kGemvThreads), smem, s, args, grid.x, extra...);
}

// Launches gemv_kernel<T, M, rows> (gemv_dot_kernel with kDot); a row count over T's register
// budget is never chosen (choose_rows) and not instantiated.
template <GGMLType T, GemvMode M, bool kDot, int kRows = kMaxRows>
void launch_rows(int rows, dim3 grid, cudaStream_t s, const GemvArgs& args) {
  constexpr int kMats = M == GemvMode::Pair ? 2 : 1;
  if constexpr (kRows > 1 && kRows * kMats * raw_words<T, kDot>() > raw_budget(kDot)) {
    launch_rows<T, M, kDot, kRows / 2>(rows, grid, s, args);
  } else if (kRows > 1 && rows != kRows) {
    launch_rows<T, M, kDot, (kRows > 1 ? kRows / 2 : 1)>(rows, grid, s, args);
  } else if constexpr (kDot) {
    // Every token of a launch in one block where the quantized x of all fit a block's shared
    // memory and the warp has at most 2 rows within the raw budget (more spill with 4 tokens' sums).
    const int n_tokens = int(grid.y);
    if constexpr (kRows * kMats <= 2 && kRows * kMats * raw_words<T, true>() <= kDotWords) {
      if (n_tokens > 1 && gemv_smem_bytes(args, true) * kGemvMaxTokens <= kGemvMaxSmem) {
        grid.y = 1;
        return launch_walk(gemv_dot_kernel<T, M, kRows, kGemvMaxTokens>, grid,
                           gemv_smem_bytes(args, true) * kGemvMaxTokens, s, args, n_tokens);
      }
    }
    launch_walk(gemv_dot_kernel<T, M, kRows, 1>, grid, gemv_smem_bytes(args, true), s, args, n_tokens);
  } else {
    launch_smem(gemv_kernel<T, M, kRows>, grid, dim3(kGemvThreads), gemv_smem_bytes(args, false), s, args);
  }
}

// Whether a decode GEMV of the n matrices outs (one type and row length; `mats` 2 for the gate/up
// pair, which reads both) runs gemv_dot_kernel: fast arithmetic, a type with a UnitDot, rows a
// multiple of 128 elements (stage_xq's groups), and a launch of at least kDotMinRows rows in all.
// On H100 at one token the dot GEMV lost to the fp32 GEMV on every matrix of under 1,000 rows
// (0.5B q/o, k/v and down 0.73-0.88x its speed, 7B k/v 0.56-0.84x) and won from 3,584 rows up
// (7B q/o 1.04-1.13x, 0.5B gate/up 1.13x; docs/BENCHMARKS.md, round 2, seventh session): every
// block quantizes x, a chain of dependent steps, before its first product, which a short grid does
// not hide. So the 7B's q/k/v group (4,608 rows) takes it where k and v alone (512 rows each) do
// not. Q8_0, whose fp32 GEMV turns each weight byte into a float in one step, gains less and also
// needs kDotMinBytesQ8 of weights: on H200 it lost on the 0.5B gate/up pair (9.3 MB, 0.85x), was
// even on 7B q/o (13.6 MB) and won from the 7B q/k/v group (17.5 MB) up (eighth session).
constexpr int64_t kDotMinRows = 2048;
constexpr int64_t kDotMinBytesQ8 = int64_t(16) << 20;
bool dot_gemv(const GemvFusion& f, const GemvOut* outs, int n, int mats = 1) {
  const Weight& w0 = outs[0].w;
  if (!f.fast || !has_unit_dot(w0.type) || w0.ne0 % 128 != 0) return false;
  int64_t rows = 0;
  for (int i = 0; i < n; ++i) rows += outs[i].w.ne1;
  if (w0.type == GGMLType::Q8_0 && rows * mats * int64_t(w0.row_bytes()) < kDotMinBytesQ8) return false;
  return rows >= kDotMinRows;
}

}  // namespace

void split_x(cudaStream_t s, bool bf16, void* hi, void* lo, const float* x, int64_t n) {
  const int threads = 256;
  const unsigned blocks = unsigned(ceil_div(n, threads));
  if (bf16) {
    launch(split_kernel<__nv_bfloat16>, dim3(blocks), dim3(threads), s, static_cast<__nv_bfloat16*>(hi),
           static_cast<__nv_bfloat16*>(lo), x, n);
  } else {
    launch(split_kernel<__half>, dim3(blocks), dim3(threads), s, static_cast<__half*>(hi),
           static_cast<__half*>(lo), x, n);
  }
  QWEN_CUDA_LAUNCH_CHECK();
}

unsigned group_segments(const GemvOut* outs, int n, int64_t rows_per_block, GroupSeg (&seg)[kMaxGemvGroup],
                        const char* op) {
  QWEN_CHECK(n >= 1 && n <= kMaxGemvGroup, "cuda ", op, ": group of ", n, " matrices (1..", kMaxGemvGroup,
             ")");
  const Weight& w0 = outs[0].w;
  unsigned blocks = 0;
  for (int i = 0; i < n; ++i) {
    const Weight& w = outs[i].w;
    check_weight(w, op);
    QWEN_CHECK(w.type == w0.type && w.ne0 == w0.ne0, "cuda ", op, ": grouped matrix ", i, " is ",
               type_name(w.type), " with rows of ", w.ne0, ", matrix 0 is ", type_name(w0.type),
               " with rows of ", w0.ne0);
    blocks += unsigned(ceil_div(w.ne1, rows_per_block));
    seg[i] = GroupSeg{outs[i].y, static_cast<const uint8_t*>(w.data), outs[i].bias, w.ne1, blocks};
  }
  return blocks;
}

unsigned group_blocks(const GemvOut* outs, int n, int64_t rows_per_block) {
  unsigned blocks = 0;
  for (int i = 0; i < n; ++i) blocks += unsigned(ceil_div(outs[i].w.ne1, rows_per_block));
  return blocks;
}

void gemv(cudaStream_t s, float* y, const Weight& w, const float* x, int n_tokens, const float* bias,
          const GemvFusion& f) {
  const GemvOut out{y, w, bias};
  gemv_group(s, &out, 1, x, n_tokens, f);
}

void gemv_group(cudaStream_t s, const GemvOut* outs, int n, const float* x, int n_tokens,
                const GemvFusion& f) {
  QWEN_CHECK(n_tokens >= 1 && n_tokens <= 65535, "cuda gemv: bad n_tokens ", n_tokens);
  QWEN_CHECK(n == 1 || !f.resid, "cuda gemv: a group of ", n, " matrices takes no residual epilogue");
  QWEN_CHECK(!f.glu_out, "cuda gemv: SwiGLU runs in gemv_swiglu only");
  GemvArgs args{};
  const Weight& w0 = outs[0].w;
  args.n_seg = n;
  args.row_bytes = w0.row_bytes();
  args.x = x;
  args.ne0 = w0.ne0;
  args.f = f;
  dispatch_type(w0.type, "matmul", [&]<GGMLType T>() {
    const auto blocks = [&](int rows) {
      return group_blocks(outs, n, kGemvWarps * rows) * unsigned(n_tokens);
    };
    if constexpr (has_unit_dot(T)) {
      if (dot_gemv(f, outs, n)) {
        const int rows = choose_rows<T, true>(1, f.rows_min_blocks, blocks);
        const dim3 grid(group_segments(outs, n, kGemvWarps * rows, args.seg, "gemv"), unsigned(n_tokens));
        return launch_rows<T, GemvMode::Plain, true>(rows, grid, s, args);
      }
    }
    const int rows = choose_rows<T, false>(1, f.rows_min_blocks, blocks);
    const dim3 grid(group_segments(outs, n, kGemvWarps * rows, args.seg, "gemv"), unsigned(n_tokens));
    // Deep: rows of more than one chunk per lane in a grid that fits one block per SM.
    const bool deep = rows == 1 && w0.ne0 > kChunk * kWarp && grid.x * grid.y <= unsigned(f.deep_max_blocks);
    if (deep) {
      launch_smem(gemv_kernel<T, GemvMode::Deep, 1>, grid, dim3(kGemvThreads), gemv_smem_bytes(args, false),
                  s, args);
    } else {
      launch_rows<T, GemvMode::Plain, false>(rows, grid, s, args);
    }
  });
  QWEN_CUDA_LAUNCH_CHECK();
}

void gemv_swiglu(cudaStream_t s, const GemvOut& gate, const GemvOut& up, const float* x, int n_tokens,
                 float* out, const GemvFusion& f) {
  QWEN_CHECK(n_tokens >= 1 && n_tokens <= 65535, "cuda gemv: bad n_tokens ", n_tokens);
  check_weight(gate.w, "gemv (gate)");
  check_weight(up.w, "gemv (up)");
  QWEN_CHECK(gate.w.type == up.w.type && gate.w.ne0 == up.w.ne0 && gate.w.ne1 == up.w.ne1, "cuda gemv: gate ",
             type_name(gate.w.type), " ", gate.w.ne1, "x", gate.w.ne0, " and up ", type_name(up.w.type), " ",
             up.w.ne1, "x", up.w.ne0, " differ in type or shape");
  GemvArgs args{};
  args.n_seg = 2;
  args.row_bytes = gate.w.row_bytes();
  args.x = x;
  args.ne0 = gate.w.ne0;
  args.f.glu_out = out;
  args.f.n_sm = f.n_sm;
  dispatch_type(gate.w.type, "matmul", [&]<GGMLType T>() {
    const auto blocks = [&](int rows) {
      return unsigned(ceil_div(gate.w.ne1, kGemvWarps * rows)) * unsigned(n_tokens);
    };
    const bool dot = dot_gemv(f, &gate, 1, 2);
    const int rows = dot ? choose_rows<T, true>(2, f.rows_min_blocks, blocks)
                         : choose_rows<T, false>(2, f.rows_min_blocks, blocks);
    const unsigned row_blocks = unsigned(ceil_div(gate.w.ne1, kGemvWarps * rows));
    args.seg[0] =
        GroupSeg{gate.y, static_cast<const uint8_t*>(gate.w.data), gate.bias, gate.w.ne1, row_blocks};
    args.seg[1] = GroupSeg{up.y, static_cast<const uint8_t*>(up.w.data), up.bias, up.w.ne1, row_blocks};
    const dim3 grid(row_blocks, unsigned(n_tokens));
    if constexpr (has_unit_dot(T)) {
      if (dot) return launch_rows<T, GemvMode::Pair, true>(rows, grid, s, args);
    }
    launch_rows<T, GemvMode::Pair, false>(rows, grid, s, args);
  });
  QWEN_CUDA_LAUNCH_CHECK();
}

void gemm(cudaStream_t s, cublasHandle_t blas, GemmScratch& scratch, float* y, const Weight& w,
          const float* x, int n_tokens, const float* bias, bool exact) {
  check_weight(w, "gemm");
  const int64_t ne0 = w.ne0, ne1 = w.ne1, nx = int64_t(n_tokens) * ne0;
  if (w.type == GGMLType::F32) {
    const float alpha = 1.f, beta = 0.f;
    QWEN_CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(ne1), n_tokens, int(ne0), &alpha,
                                  static_cast<const float*>(w.data), int(ne0), x, int(ne0), &beta, y,
                                  int(ne1)));
  } else {
    ensure(s, scratch.x16, scratch.x16_bytes, size_t(2 * nx) * 2, "activation");
    const bool bf16 = w.type == GGMLType::BF16;
    const bool two_pass = exact || bf16;
    const cudaDataType_t dt = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    char* x_hi = static_cast<char*>(scratch.x16);
    char* x_lo = x_hi + nx * 2;
    split_x(s, bf16, x_hi, two_pass ? x_lo : nullptr, x, nx);
    if (w.type == GGMLType::F16 || bf16) {
      gemm_ex(blas, dt, ne1, n_tokens, ne0, w.data, x_hi, 0.f, y, ne1);
      if (two_pass) gemm_ex(blas, dt, ne1, n_tokens, ne0, w.data, x_lo, 1.f, y, ne1);
    } else {
      const int64_t tile_rows = tile_rows_of(ne1, ne0);
      ensure(s, scratch.w16, scratch.w16_bytes, size_t(tile_rows * ne0) * 2, "weight");
      auto* w16 = static_cast<__half*>(scratch.w16);
      const auto* data = static_cast<const uint8_t*>(w.data);
      const size_t rb = w.row_bytes();
      for (int64_t r0 = 0; r0 < ne1; r0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, ne1 - r0);
        const int64_t warps = rows * ceil_div(ne0 / kChunk, int64_t(kWarp));
        const unsigned dq_blocks = unsigned(ceil_div(warps, int64_t(kDequantWarps)));
        dispatch_type(w.type, "matmul", [&]<GGMLType T>() {
          launch(dequant_f16_kernel<T>, dim3(dq_blocks), dim3(kDequantWarps * kWarp), s, w16, data, rb, ne0, r0,
                 rows);
        });
        QWEN_CUDA_LAUNCH_CHECK();
        gemm_ex(blas, dt, rows, n_tokens, ne0, w16, x_hi, 0.f, y + r0, ne1);
        if (two_pass) gemm_ex(blas, dt, rows, n_tokens, ne0, w16, x_lo, 1.f, y + r0, ne1);
      }
    }
  }
  if (bias) {
    const int64_t n = int64_t(n_tokens) * ne1;
    launch(bias_kernel, dim3(unsigned(ceil_div(n, 256))), dim3(256), s, y, bias, ne1, n);
    QWEN_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace qwen::cuda
