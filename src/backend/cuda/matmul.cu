// y = W x for a weight W in its GGUF type: y [n_tokens][ne1], x [n_tokens][ne0] (fp32).
//
// Decode (n_tokens <= kGemvMaxTokens): each warp computes 1 to 4 output rows; each lane loads
// whole 32-element chunks of them, decodes them in registers and accumulates in fp32 against x,
// then a warp reduction per row. The backend may fuse the following residual add into it, launch
// the GEMVs that share x as one grid (q/k/v), and compute gate and up rows together with SwiGLU
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

#include "backend/cuda/ops.cuh"
#include "backend/cuda/quant.cuh"

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
// Plain and Deep apply the optional epilogue resid += y (single matrix only).
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
#pragma unroll
  for (int m = 0; m < kMats; ++m) {
#pragma unroll
    for (int i = 0; i < kRows; ++i) acc[m][i] = warp_sum(acc[m][i]);
  }
  // Lane i stores row row0 + i.
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

// Rows per warp of a GEMV over `mats` matrices at once (2: gate and up) of type T: the most of
// kMaxRows, 2 and 1 whose raw chunks (rows * mats per lane) fit kRawWords registers and whose grid,
// blocks(rows) blocks, still has min_blocks (the SM count; 0: one row per warp always). Fewer
// blocks than SMs would leave SMs idle in these latency-bound launches.
template <GGMLType T, class Blocks>
int choose_rows(int mats, int min_blocks, const Blocks& blocks) {
  for (int rows = kMaxRows; rows > 1; rows /= 2) {
    if (min_blocks > 0 && rows * mats * ChunkRaw<T>::kWords <= kRawWords &&
        blocks(rows) >= unsigned(min_blocks))
      return rows;
  }
  return 1;
}

// Shared memory of a GEMV: x of one token (stage_x).
size_t x_smem_bytes(const GemvArgs& a) {
  constexpr size_t kMax = 227 * 1024;  // an sm_90 block's shared memory
  const size_t bytes = size_t(a.ne0) * sizeof(float);
  QWEN_CHECK(bytes <= kMax, "cuda gemv: rows of ", a.ne0, " elements need ", bytes,
             " bytes of shared memory for x, more than the ", kMax, " a block may have");
  return bytes;
}

// Launches gemv_kernel<T, M, rows>; a row count over T's register budget is never chosen
// (choose_rows) and not instantiated.
template <GGMLType T, GemvMode M, int kRows = kMaxRows>
void launch_rows(int rows, dim3 grid, cudaStream_t s, const GemvArgs& args) {
  constexpr int kMats = M == GemvMode::Pair ? 2 : 1;
  if constexpr (kRows == 1) {
    launch_smem(gemv_kernel<T, M, 1>, grid, dim3(kGemvThreads), x_smem_bytes(args), s, args);
  } else if constexpr (kRows * kMats * ChunkRaw<T>::kWords > kRawWords) {
    launch_rows<T, M, kRows / 2>(rows, grid, s, args);
  } else if (rows == kRows) {
    launch_smem(gemv_kernel<T, M, kRows>, grid, dim3(kGemvThreads), x_smem_bytes(args), s, args);
  } else {
    launch_rows<T, M, kRows / 2>(rows, grid, s, args);
  }
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
    const int rows = choose_rows<T>(1, f.rows_min_blocks, blocks);
    const dim3 grid(group_segments(outs, n, kGemvWarps * rows, args.seg, "gemv"), unsigned(n_tokens));
    // Deep: rows of more than one chunk per lane in a grid that fits one block per SM.
    const bool deep = rows == 1 && w0.ne0 > kChunk * kWarp && grid.x * grid.y <= unsigned(f.deep_max_blocks);
    if (deep) {
      launch_smem(gemv_kernel<T, GemvMode::Deep, 1>, grid, dim3(kGemvThreads), x_smem_bytes(args), s,
                  args);
    } else {
      launch_rows<T, GemvMode::Plain>(rows, grid, s, args);
    }
  });
  QWEN_CUDA_LAUNCH_CHECK();
}

void gemv_swiglu(cudaStream_t s, const GemvOut& gate, const GemvOut& up, const float* x, int n_tokens,
                 float* out, int rows_min_blocks) {
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
  dispatch_type(gate.w.type, "matmul", [&]<GGMLType T>() {
    const auto blocks = [&](int rows) {
      return unsigned(ceil_div(gate.w.ne1, kGemvWarps * rows)) * unsigned(n_tokens);
    };
    const int rows = choose_rows<T>(2, rows_min_blocks, blocks);
    const unsigned row_blocks = unsigned(ceil_div(gate.w.ne1, kGemvWarps * rows));
    args.seg[0] =
        GroupSeg{gate.y, static_cast<const uint8_t*>(gate.w.data), gate.bias, gate.w.ne1, row_blocks};
    args.seg[1] = GroupSeg{up.y, static_cast<const uint8_t*>(up.w.data), up.bias, up.w.ne1, row_blocks};
    const dim3 grid(row_blocks, unsigned(n_tokens));
    launch_rows<T, GemvMode::Pair>(rows, grid, s, args);
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
