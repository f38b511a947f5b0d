// y = W x for a few tokens at once (kGemvMaxTokens < n_tokens <= kSmallMaxTokens): the batched
// decode step of a server with several streams. The GEMV reads each weight row once per token,
// and the cuBLAS path dequantizes the whole matrix to fp16 scratch and runs two GEMM passes every
// step; at 8-64 tokens both are latency- or scratch-bound. Here every weight byte is read from
// DRAM once per step and the products run on tensor cores (mma.sync m16n8k16, fp32 accumulate).
//
// Numerics are those of the cuBLAS prefill path (matmul.cu): a weight is dequantized exactly in
// fp32 and rounded to fp16 once (F16 and BF16 weights are used as stored, BF16 with bf16 mma);
// activations are split into hi + lo halves of the same 16-bit type and both are multiplied, so
// x keeps ~22 bits (fp16) or ~16 bits (bf16). F32 weights never come here (cuBLAS SGEMM).
//
// Work split. A block owns kRows = 32 output rows (two 16-row mma tiles) and all n tokens; its
// kWarps warps take the 64-column slices of K round robin (slice s: columns [64s, 64s + 64)),
// so a long row is read by 8 warps at once. Per slice, lane L dequantizes the two 32-element
// chunks of row L of the block into a per-warp fp16 tile in shared memory (ldmatrix reads the
// mma A fragments from it), and the next slice's weights are loaded while the tensor cores run.
// B fragments (the activations of 8 tokens) come straight from x in global memory (L2: x is a
// few hundred KiB at most). At the end the warps' partial sums are added in shared memory in a
// fixed tree order, so results do not depend on scheduling. Rows long enough to leave each warp
// a chain of many slices (the FFN down projection: 896 rows of 4864 are only 28 blocks) are
// split over several blocks along K, whose sums the last block to finish adds in split order
// (deterministic again). One launch may cover up to kMaxGemvGroup matrices that share x (q/k/v,
// gate/up: consecutive block ranges), and a single matrix may add its result into a residual.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/ops.cuh"
#include "backend/cuda/quant.cuh"

namespace qwen::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarp;
constexpr int kMTiles = 2;                // 16-row mma tiles per block
constexpr int kRows = 16 * kMTiles;       // rows per block: one per lane while dequantizing
constexpr int kSliceCols = 2 * kChunk;    // K columns per warp iteration
constexpr int kTileStride = kSliceCols + 8;  // halves per tile row: 144 bytes keeps ldmatrix rows 16-byte aligned
static_assert(kRows == kWarp, "lane L dequantizes row L of the block");

constexpr size_t kTileBytes = size_t(kWarps) * kRows * kTileStride * 2;
// Partial sums of one warp for NT 8-token tiles: [kMTiles][NT][4] floats per lane.
template <int NT>
constexpr size_t kRedBytes = size_t(kWarps / 2) * kMTiles * NT * 4 * kWarp * sizeof(float);

// The 16-bit type of the tensor-core operands: bf16 for BF16 weights, fp16 otherwise.
template <GGMLType T>
using OperandT = std::conditional_t<T == GGMLType::BF16, __nv_bfloat16, __half>;

template <class H>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  uint32_t r;
  if constexpr (std::is_same_v<H, __half>) {
    const __half2 h = __floats2half2_rn(a, b);
    r = *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    r = *reinterpret_cast<const uint32_t*>(&h);
  }
  return r;
}

// (a, b) -> hi = round(a, b), lo = round((a, b) - hi), both packed as two 16-bit values.
template <class H>
__device__ __forceinline__ void split2(float a, float b, uint32_t& hi, uint32_t& lo) {
  hi = pack2<H>(a, b);
  float ha, hb;
  if constexpr (std::is_same_v<H, __half>) {
    const __half2 h = *reinterpret_cast<const __half2*>(&hi);
    ha = __low2float(h), hb = __high2float(h);
  } else {
    const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&hi);
    ha = __low2float(h), hb = __high2float(h);
  }
  lo = pack2<H>(a - ha, b - hb);
}

// d += A (16x16, row-major fragment a) * B (16x8, column fragment b), fp32 accumulate.
template <class H>
__device__ __forceinline__ void mma16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<H, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// The four 8x8 matrices of a 16x16 A fragment from a row-major shared tile: lanes 0-15 give
// rows 0-15 at column 0, lanes 16-31 rows 0-15 at column 8 (ldmatrix's order is the fragment's).
__device__ __forceinline__ void ldmatrix_x4(uint32_t a[4], const void* smem_row) {
  const unsigned addr = unsigned(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(addr));
}

struct SmallArgs {
  GroupSeg seg[kMaxGemvGroup];
  int n_seg;
  const float* x;
  size_t row_bytes;
  int64_t ne0;
  int n_tokens;
  float* resid;  // single matrix only: resid += y after y is stored
  // Split K (gridDim.y = splits > 1): block (x, y) takes the slices y, y + splits, ... of each
  // warp's round robin, stores its sums to partials[(x * splits + y)][kPer][32 lanes] and counts
  // itself in counters[x]; the last of the x's blocks adds the splits' sums in split order (so
  // the result does not depend on which block finishes last), writes y and resets the counter.
  float* partials;
  unsigned* counters;
};

// NT: 8-token mma tiles (n_tokens <= 8 NT; tokens beyond n_tokens multiply zeros).
template <GGMLType T, int NT>
__global__ void __launch_bounds__(kThreads) gemm_small_kernel(const SmallArgs a) {
  using H = OperandT<T>;
  __shared__ __align__(16) unsigned char smem[kTileBytes > kRedBytes<NT> ? kTileBytes : kRedBytes<NT>];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int g = lane / 4, q = lane % 4;  // mma fragment coordinates: group and thread in group
  const unsigned b = blockIdx.x;
  unsigned block0;
  const GroupSeg sg = block_segment(a.seg, a.n_seg, b, block0);
  const int64_t row0 = int64_t(b - block0) * kRows;
  H* tile = reinterpret_cast<H*>(smem) + warp * kRows * kTileStride;
  const int64_t n_chunks = a.ne0 / kChunk, n_slices = (n_chunks + 1) / 2;
  const uint8_t* wrow = sg.w + min(row0 + lane, sg.ne1 - 1) * a.row_bytes;  // rows past ne1: not stored

  float v[2][kChunk];
  auto load_slice = [&](int64_t s) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      if (2 * s + c < n_chunks) {
        dequant_chunk<T>(wrow, 2 * s + c, v[c]);
      } else {
#pragma unroll
        for (int i = 0; i < kChunk; ++i) v[c][i] = 0.f;
      }
    }
  };
  float acc[kMTiles][NT][4] = {};
  const int64_t split = blockIdx.y, step = int64_t(kWarps) * gridDim.y;
  int64_t s = split * kWarps + warp;
  // Weights are never written by a kernel: the first slice loads while the predecessor drains.
  if (s < n_slices) load_slice(s);
  pdl_begin();
  for (; s < n_slices; s += step) {
    H* trow = tile + lane * kTileStride;
#pragma unroll
    for (int c = 0; c < 2; ++c) {
#pragma unroll
      for (int i = 0; i < kChunk / 8; ++i) {
        uint4 u;
        u.x = pack2<H>(v[c][8 * i], v[c][8 * i + 1]);
        u.y = pack2<H>(v[c][8 * i + 2], v[c][8 * i + 3]);
        u.z = pack2<H>(v[c][8 * i + 4], v[c][8 * i + 5]);
        u.w = pack2<H>(v[c][8 * i + 6], v[c][8 * i + 7]);
        *reinterpret_cast<uint4*>(trow + c * kChunk + 8 * i) = u;
      }
    }
    __syncwarp();
    if (s + step < n_slices) load_slice(s + step);  // in flight while the tensor cores run
#pragma unroll
    for (int kk = 0; kk < kSliceCols / 16; ++kk) {
      const int64_t k = s * kSliceCols + kk * 16;
      if (k >= a.ne0) break;  // a last slice of one chunk
      uint32_t af[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m)
        ldmatrix_x4(af[m], tile + (m * 16 + lane % 16) * kTileStride + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int tok = j * 8 + g;
        float2 x0 = make_float2(0.f, 0.f), x1 = x0;
        if (tok < a.n_tokens) {
          const float* xr = a.x + int64_t(tok) * a.ne0 + k + 2 * q;
          x0 = *reinterpret_cast<const float2*>(xr);
          x1 = *reinterpret_cast<const float2*>(xr + 8);
        }
        uint32_t b0h, b0l, b1h, b1l;
        split2<H>(x0.x, x0.y, b0h, b0l);
        split2<H>(x1.x, x1.y, b1h, b1l);
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          mma16816<H>(acc[m][j], af[m], b0h, b1h);
          mma16816<H>(acc[m][j], af[m], b0l, b1l);
        }
      }
    }
    __syncwarp();  // the tile is rewritten by the next slice
  }

  // Tree sum of the warps' partials (fixed order): warps [h, 2h) hand theirs to warps [0, h).
  float* red = reinterpret_cast<float*>(smem);
  constexpr int kPer = kMTiles * NT * 4;  // floats per lane
#pragma unroll
  for (int h = kWarps / 2; h >= 1; h /= 2) {
    __syncthreads();  // the tiles (first round) or the previous round's slots are free
    if (warp >= h && warp < 2 * h) {
      float* slot = red + (warp - h) * kPer * kWarp;
#pragma unroll
      for (int m = 0; m < kMTiles; ++m)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) slot[((m * NT + j) * 4 + e) * kWarp + lane] = acc[m][j][e];
    }
    __syncthreads();
    if (warp < h) {
      const float* slot = red + warp * kPer * kWarp;
#pragma unroll
      for (int m = 0; m < kMTiles; ++m)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[m][j][e] += slot[((m * NT + j) * 4 + e) * kWarp + lane];
    }
  }
  if (warp != 0) return;
  if (gridDim.y > 1) {
    float* mine = a.partials + (int64_t(b) * gridDim.y + split) * kPer * kWarp;
#pragma unroll
    for (int i = 0; i < kPer; ++i) mine[i * kWarp + lane] = (&acc[0][0][0])[i];
    __threadfence();  // the sums are visible before the count that announces them
    __syncwarp();     // every lane's sums, not only lane 0's
    unsigned done = 0;
    if (lane == 0) done = atomicAdd(&a.counters[b], 1u);
    if (__shfl_sync(0xffffffffu, done, 0) != gridDim.y - 1) return;
    __threadfence();  // the other splits' sums are read after their counts
#pragma unroll
    for (int i = 0; i < kPer; ++i) (&acc[0][0][0])[i] = 0.f;
    for (unsigned k = 0; k < gridDim.y; ++k) {
      const volatile float* theirs = a.partials + (int64_t(b) * gridDim.y + k) * kPer * kWarp;
#pragma unroll
      for (int i = 0; i < kPer; ++i) (&acc[0][0][0])[i] += theirs[i * kWarp + lane];
    }
    if (lane == 0) a.counters[b] = 0;  // ready for the next launch (graphs replay it)
  }
  // C fragment: e = 0, 1: row g, tokens 2q, 2q + 1; e = 2, 3: row g + 8, same tokens.
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = row0 + m * 16 + g + (e >= 2 ? 8 : 0);
      if (row >= sg.ne1) continue;
      const float bias = sg.bias ? sg.bias[row] : 0.f;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int tok = j * 8 + 2 * q + (e & 1);
        if (tok >= a.n_tokens) continue;
        const int64_t o = int64_t(tok) * sg.ne1 + row;
        const float out = acc[m][j][e] + bias;
        sg.y[o] = out;
        if (a.resid) a.resid[o] += out;  // the arithmetic of add_kernel
      }
    }
  }
}

// Splits of K so that a grid of few row blocks with long rows (the FFN down projection: 28
// blocks of 4864-wide rows) does not leave each warp a long chain of dependent slices: about two
// slices per warp and split, as far as the scratch holds the partial sums.
template <int NT>
unsigned choose_splits(unsigned blocks, int64_t n_slices) {
  constexpr int64_t kPerBlock = int64_t(kMTiles) * NT * 4 * kWarp;  // partial floats per split
  int64_t splits = n_slices / (2 * kWarps);
  splits = std::min<int64_t>(splits, 8);
  if (blocks > unsigned(kMaxCounters)) splits = 1;
  while (splits > 1 && int64_t(blocks) * splits * kPerBlock > kGemmPartialFloats) --splits;
  return unsigned(std::max<int64_t>(splits, 1));
}

template <GGMLType T, int NT>
void launch_small(cudaStream_t s, const SmallArgs& args, unsigned blocks) {
  const unsigned splits = choose_splits<NT>(blocks, (args.ne0 / kChunk + 1) / 2);
  launch(gemm_small_kernel<T, NT>, dim3(blocks, splits), dim3(kThreads), s, args);
}

}  // namespace

void gemm_small(cudaStream_t s, const DecodeScratch& scratch, const GemvOut* outs, int n, const float* x,
                int n_tokens, float* resid) {
  QWEN_CHECK(n_tokens >= 1 && n_tokens <= kSmallMaxTokens, "cuda gemm_small: ", n_tokens, " tokens (1..",
             kSmallMaxTokens, ")");
  QWEN_CHECK(n == 1 || !resid, "cuda gemm_small: a group of ", n, " matrices takes no residual epilogue");
  SmallArgs args{};
  const unsigned blocks = group_segments(outs, n, kRows, args.seg, "gemm_small");
  const Weight& w = outs[0].w;
  QWEN_CHECK(w.type != GGMLType::F32, "cuda gemm_small: F32 weights go through SGEMM");
  args.n_seg = n;
  args.x = x;
  args.row_bytes = w.row_bytes();
  args.ne0 = w.ne0;
  args.n_tokens = n_tokens;
  args.resid = resid;
  args.partials = scratch.gemm_partials;
  args.counters = scratch.gemm_counters;
  dispatch_type(w.type, "matmul", [&]<GGMLType T>() {
    if constexpr (T != GGMLType::F32) {
      if (n_tokens <= 8) {
        launch_small<T, 1>(s, args, blocks);
      } else if (n_tokens <= 16) {
        launch_small<T, 2>(s, args, blocks);
      } else if (n_tokens <= 32) {
        launch_small<T, 4>(s, args, blocks);
      } else {
        launch_small<T, 8>(s, args, blocks);
      }
    }
  });
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace qwen::cuda
