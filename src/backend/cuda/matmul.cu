// y = W x for a weight W in its GGUF type: y [n_tokens][ne1], x [n_tokens][ne0] (fp32).
//
// Decode (n_tokens <= kGemvMaxTokens): the copy engine streams each warp's rows into shared
// memory (gemv_kernel); each lane decodes whole 32-element chunks and accumulates in fp32 against
// x, then a warp reduction per row. The backend may fuse the following residual add into it, launch the GEMVs that share x as one grid (q/k/v), and compute gate and up rows
// together with SwiGLU (gemv_swiglu).
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

#include "backend/cuda/mma.cuh"
#include "backend/cuda/ops.cuh"
#include "backend/cuda/quant.cuh"

namespace qwen::cuda {
namespace {

constexpr int kGemvThreads = 256;  // 8 warps
constexpr int kGemvWarps = kGemvThreads / kWarp;
constexpr int kMaxStages = 8;
constexpr int64_t kTileElems = int64_t(32) << 20;  // dequantized weight tile: 32 Mi fp16 = 64 MiB

struct GemvArgs {
  GroupSeg seg[kMaxGemvGroup];
  int n_seg;
  int64_t n_rows;  // rows of all segments together (Pair: of each matrix)
  size_t row_bytes;
  const float* x;
  int64_t ne0;
  GemvFusion f;
  int stages;           // slots in each warp's ring
  unsigned slot_bytes;  // bytes of one matrix's slice in a slot
};

// A row is streamed in slices of slice_chunks<T>() chunks: a multiple of 32 (one chunk per lane)
// and of the chunks of a block, about 1 KiB of weights.
template <GGMLType T>
constexpr int slice_chunks() {
  constexpr int per_block = BlockInfo<T>::kElems / kChunk;
  constexpr int bytes32 = kWarp / per_block * BlockInfo<T>::kBytes;
  return kWarp * (bytes32 < 1024 ? 1024 / bytes32 : 1);
}
// A slot holds a slice copied from 16-byte boundaries around it (bulk copies move aligned 16-byte
// units), so up to 30 bytes more than the slice.
template <GGMLType T>
constexpr unsigned slot_bytes() {
  constexpr unsigned slice = slice_chunks<T>() / (BlockInfo<T>::kElems / kChunk) * BlockInfo<T>::kBytes;
  return (slice + 15) / 16 * 16 + 32;
}

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

// acc += dot(v, xs) in index order: every row runs this same sequence of fmaf.
__device__ __forceinline__ void dot_chunk(const float v[kChunk], const float xs[kChunk], float& acc) {
#pragma unroll
  for (int k = 0; k < kChunk; ++k) acc = fmaf(v[k], xs[k], acc);
}

// Decode GEMV, weights streamed by the copy engine. Warp w of block b computes rows w + 8b,
// w + 8b + 8 * gridDim.x, ... (of both matrices when kPair): the grid is sized to the blocks that
// fit the SMs at once, so each warp walks several rows. Its rows' slices form one sequence that
// lane 0 keeps `stages` slices ahead in a ring of shared-memory slots (one bulk copy per matrix
// and slice, completing on the slot's mbarrier), so every warp has several KiB of weights in
// flight at all times, across row boundaries, with no registers holding them; the first
// slices are requested before pdl_begin() (no kernel writes weights), overlapping the previous
// kernel's tail. Lane L decodes chunks L, L + 32, ... of each row from the slots and accumulates
// them in that order in fp32 against x (staged once per block), then a warp sum per row: the
// arithmetic of every earlier GEMV of this engine. Segments (up to kMaxGemvGroup matrices that
// share x: q, k, v) are one row space. Pair: segments 0 (gate) and 1 (up) have the same rows;
// the warp computes both and stores gate, up and f.glu_out = silu(gate) * up. A single matrix
// may add the epilogue resid += y.
template <GGMLType T, bool kPair>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const GemvArgs a) {
  constexpr int kMats = kPair ? 2 : 1;
  constexpr int kPerBlock = BlockInfo<T>::kElems / kChunk;
  constexpr int kSlice = slice_chunks<T>();
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int stages = a.stages;
  // Shared memory: x [ne0] floats, then each warp's barriers [stages], then its slots.
  float4* xsm = reinterpret_cast<float4*>(smem);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + a.ne0 * sizeof(float)) + warp * stages;
  unsigned char* slots = smem + a.ne0 * sizeof(float) + kGemvWarps * stages * sizeof(uint64_t) +
                         size_t(warp) * stages * kMats * a.slot_bytes;
  const int n_chunks = int(a.ne0 / kChunk);
  const int spr = (n_chunks + kSlice - 1) / kSlice;  // slices per row
  const int64_t gw = int64_t(blockIdx.x) * kGemvWarps + warp, n_gw = int64_t(gridDim.x) * kGemvWarps;
  const int64_t t = blockIdx.y;
  // Row g (of all segments): its segment and the row within it.
  const auto locate = [&](int64_t g, int64_t& row) {
    const int64_t e0 = a.seg[0].ne1, e1 = e0 + (a.n_seg > 1 ? a.seg[1].ne1 : 0);
    const int s = kPair || g < e0 ? 0 : (g < e1 ? 1 : 2);
    row = g - (s == 0 ? 0 : (s == 1 ? e0 : e1));
    return s == 0 ? a.seg[0] : (s == 1 ? a.seg[1] : a.seg[2]);
  };
  // Matrix m's row g and the start of slice `sl` in it (bytes of whole blocks).
  const auto row_ptr = [&](int64_t g, int m) {
    int64_t row;
    const GroupSeg sg = locate(g, row);
    return (m == 0 ? sg.w : a.seg[1].w) + row * a.row_bytes;
  };
  const auto slice_off = [](int sl) { return size_t(sl) * (kSlice / kPerBlock) * BlockInfo<T>::kBytes; };
  // Lane 0 requests the slices of the warp's rows in order, `stages` ahead of their use, from
  // 16-byte boundaries around them (`lead` bytes before each slice: ((row start + offset) & 15).
  int64_t p_g = gw;
  int p_sl = 0, p_slot = 0;
  const auto issue_next = [&] {
    if (p_g >= a.n_rows) return;
    const int c0 = p_sl * kSlice, c1 = min(c0 + kSlice, n_chunks);
    const uint8_t* src[kMats];
    unsigned bytes[kMats], total = 0;
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
      const uint8_t* p = row_ptr(p_g, m) + slice_off(p_sl);
      const uint8_t* e = p + (c1 - c0) / kPerBlock * BlockInfo<T>::kBytes;
      const unsigned lead = unsigned(reinterpret_cast<uintptr_t>(p) & 15u);
      src[m] = p - lead;
      bytes[m] = unsigned(e - p) + lead + unsigned(-reinterpret_cast<uintptr_t>(e) & 15u);
      total += bytes[m];
    }
    mbar_expect_tx(bars + p_slot, total);
#pragma unroll
    for (int m = 0; m < kMats; ++m)
      bulk_copy(slots + (size_t(p_slot) * kMats + m) * a.slot_bytes, src[m], bytes[m], bars + p_slot);
    if (++p_sl == spr) p_sl = 0, p_g += n_gw;
    if (++p_slot == stages) p_slot = 0;
  };
  if (lane == 0) {
    for (int i = 0; i < stages; ++i) mbar_init(bars + i, 1);
    for (int i = 0; i < stages; ++i) issue_next();
  }
  __syncwarp();
  pdl_begin();
  stage_x(xsm, a.x + t * a.ne0, a.ne0);
  int slot = 0;
  unsigned phase = 0;
  for (int64_t g = gw; g < a.n_rows; g += n_gw) {
    const uint8_t* wrow[kMats];
#pragma unroll
    for (int m = 0; m < kMats; ++m) wrow[m] = row_ptr(g, m);
    float acc[kMats] = {};
    for (int sl = 0; sl < spr; ++sl) {
      mbar_wait(bars + slot, phase);
      const int c0 = sl * kSlice, n_c = min(kSlice, n_chunks - c0);
      const uint8_t* base[kMats];
#pragma unroll
      for (int m = 0; m < kMats; ++m)
        base[m] = slots + (size_t(slot) * kMats + m) * a.slot_bytes +
                  (reinterpret_cast<uintptr_t>(wrow[m] + slice_off(sl)) & 15u);
#pragma unroll
      for (int i = 0; i < kSlice / kWarp; ++i) {
        const int c = i * kWarp + lane;
        if (c < n_c) {
          float xs[kChunk];
          load_x_smem(xsm, c0 + c, xs);
#pragma unroll
          for (int m = 0; m < kMats; ++m) {
            ChunkRaw<T> raw;
            raw.load(base[m] + c / kPerBlock * BlockInfo<T>::kBytes, c % kPerBlock);
            float v[kChunk];
            raw.decode(v);
            dot_chunk(v, xs, acc[m]);
          }
        }
      }
      __syncwarp();  // every lane has read the slot before it is refilled
      if (lane == 0) issue_next();
      if (++slot == stages) slot = 0, phase ^= 1u;
    }
#pragma unroll
    for (int m = 0; m < kMats; ++m) acc[m] = warp_sum(acc[m]);
    int64_t row;
    const GroupSeg sg = locate(g, row);
    if (lane == 0) {
      const int64_t o = t * sg.ne1 + row;
      const float out = acc[0] + (sg.bias ? sg.bias[row] : 0.f);
      sg.y[o] = out;
      if constexpr (kPair) {
        const float up = acc[1] + (a.seg[1].bias ? a.seg[1].bias[row] : 0.f);
        a.seg[1].y[o] = up;
        a.f.glu_out[o] = out / (1.f + expf(-out)) * up;  // the arithmetic of swiglu_kernel
      } else if (a.f.resid) {
        a.f.resid[o] += out;
      }
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

// Launches gemv_kernel<T, kPair> for args (its segments, n_rows, x, ne0 and f set). Shared
// memory: x, then per warp `stages` slots; long rows (x over 56 KiB) get one block per SM and
// deep rings, others room for two blocks per SM. The grid is at most what fits the SMs at once,
// each warp then walking the same number of rows (one more for some).
template <GGMLType T, bool kPair>
void launch_gemv(cudaStream_t s, GemvArgs& args, int n_tokens) {
  constexpr size_t kMaxSmem = 227 * 1024;  // an sm_90 block's shared memory
  constexpr int kMats = kPair ? 2 : 1;
  const size_t x_bytes = size_t(args.ne0) * sizeof(float);
  const size_t per_stage = kGemvWarps * (kMats * size_t(slot_bytes<T>()) + sizeof(uint64_t));
  QWEN_CHECK(x_bytes + 2 * per_stage <= kMaxSmem, "cuda gemv: rows of ", args.ne0, " elements need ",
             x_bytes + 2 * per_stage, " bytes of shared memory, more than the ", kMaxSmem, " a block may have");
  const size_t budget = x_bytes > 56 * 1024 ? kMaxSmem : kMaxSmem / 2;
  args.stages = int(std::clamp<size_t>((std::max(budget, x_bytes) - x_bytes) / per_stage, 2, kMaxStages));
  args.slot_bytes = slot_bytes<T>();
  const size_t smem = x_bytes + size_t(args.stages) * per_stage;
  const auto kernel = gemv_kernel<T, kPair>;
  QWEN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int device = 0, n_sm = 0, per_sm = 0;
  QWEN_CUDA_CHECK(cudaGetDevice(&device));
  QWEN_CUDA_CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, device));
  QWEN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kGemvThreads, smem));
  // As many rows per warp as the resident warps need, then no more warps than that takes.
  const int64_t fit = std::max<int64_t>(1, int64_t(std::max(per_sm, 1)) * n_sm / n_tokens) * kGemvWarps;
  const int64_t per_warp = ceil_div(args.n_rows, fit);
  const dim3 grid(unsigned(ceil_div(ceil_div(args.n_rows, per_warp), kGemvWarps)), unsigned(n_tokens));
  launch_smem(kernel, grid, dim3(kGemvThreads), smem, s, args);
}

}  // namespace

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
  QWEN_CHECK(!f.glu_out, "cuda gemv: a SwiGLU output is gemv_swiglu's");
  QWEN_CHECK(n == 1 || !f.resid, "cuda gemv: a group of ", n, " matrices takes no residual epilogue");
  GemvArgs args{};
  const Weight& w0 = outs[0].w;
  args.n_seg = n;
  args.n_rows = group_segments(outs, n, 1, args.seg, "gemv");
  args.row_bytes = w0.row_bytes();
  args.ne0 = w0.ne0;
  args.f = f;
  args.x = x;
  dispatch_type(w0.type, "matmul", [&]<GGMLType T>() { launch_gemv<T, false>(s, args, n_tokens); });
  QWEN_CUDA_LAUNCH_CHECK();
}

void gemv_swiglu(cudaStream_t s, const GemvOut& gate, const GemvOut& up, const float* x, int n_tokens,
                 float* out) {
  QWEN_CHECK(n_tokens >= 1 && n_tokens <= 65535, "cuda gemv: bad n_tokens ", n_tokens);
  QWEN_CHECK(gate.w.type == up.w.type && gate.w.ne0 == up.w.ne0 && gate.w.ne1 == up.w.ne1, "cuda gemv: gate ",
             type_name(gate.w.type), " ", gate.w.ne1, "x", gate.w.ne0, " and up ", type_name(up.w.type), " ",
             up.w.ne1, "x", up.w.ne0, " differ in type or shape");
  GemvArgs args{};
  const GemvOut both[2] = {gate, up};
  group_segments(both, 2, 1, args.seg, "gemv (gate/up)");
  args.n_seg = 2;
  args.n_rows = gate.w.ne1;
  args.row_bytes = gate.w.row_bytes();
  args.ne0 = gate.w.ne0;
  args.f.glu_out = out;
  args.x = x;
  dispatch_type(gate.w.type, "matmul", [&]<GGMLType T>() { launch_gemv<T, true>(s, args, n_tokens); });
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
    const int threads = 256;
    const unsigned blocks = unsigned(ceil_div(nx, threads));
    const bool bf16 = w.type == GGMLType::BF16;
    const bool two_pass = exact || bf16;
    const cudaDataType_t dt = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    if (bf16) {
      auto* hi = static_cast<__nv_bfloat16*>(scratch.x16);
      launch(split_kernel<__nv_bfloat16>, dim3(blocks), dim3(threads), s, hi, hi + nx, x, nx);
    } else {
      auto* hi = static_cast<__half*>(scratch.x16);
      launch(split_kernel<__half>, dim3(blocks), dim3(threads), s, hi, two_pass ? hi + nx : nullptr, x, nx);
    }
    QWEN_CUDA_LAUNCH_CHECK();
    const char* x_hi = static_cast<const char*>(scratch.x16);
    const char* x_lo = x_hi + nx * 2;
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
