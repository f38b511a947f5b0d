// Host entry points of the CUDA op families (one .cu per family). All pointers are device
// memory; every launch is asynchronous on `stream`. Layouts are those of backend/backend.h.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/backend.h"
#include "backend/cuda/common.cuh"

namespace qwen::cuda {

// Device scratch owned by the backend, grown only outside steady-state decode (see matmul.cu).
struct GemmScratch {
  void* w16 = nullptr;  // dequantized weight tile, fp16 or bf16
  size_t w16_bytes = 0;
  void* x16 = nullptr;  // activations split into hi and lo halves: [2][n_tokens][ne0]
  size_t x16_bytes = 0;
};

// Fixed device scratch of the decode path, allocated and zeroed once by the backend (the
// counters return to zero after every use, so captured graphs can replay them).
constexpr int64_t kAttnPartialFloats = int64_t(1) << 20;
constexpr int kMaxCounters = 4096;
constexpr int64_t kGemmPartialFloats = int64_t(1) << 22;
struct DecodeScratch {
  float* attn_partials = nullptr;             // kAttnPartialFloats: split-K (acc, max, sum) partials
  unsigned* attn_counters = nullptr;          // kMaxCounters: finished splits per (token, head)
  unsigned long long* argmax_keys = nullptr;  // kMaxCounters: best (value, index) key per row
  unsigned* argmax_counters = nullptr;        // kMaxCounters: finished blocks per row
  float* gemm_partials = nullptr;             // kGemmPartialFloats: gemm_small's split-K sums
  unsigned* gemm_counters = nullptr;          // kMaxCounters: finished splits per row block
  void* gemm_x16 = nullptr;                   // kSmallX16Bytes: gemm_small's x as 16-bit hi, lo
};

// embed.cu
void embed(cudaStream_t s, float* out, const Weight& table, const int32_t* ids, int n_tokens);

// norm.cu
void rmsnorm(cudaStream_t s, float* out, const float* x, const float* w, int64_t n_rows, int n, float eps);

// matmul.cu: hi = round(x), lo = round(x - hi) (lo null: hi only) for n elements, in bf16
// (bf16) or fp16: the activations of the tensor-core GEMMs.
void split_x(cudaStream_t s, bool bf16, void* hi, void* lo, const float* x, int64_t n);

// matmul.cu: GEMV for n_tokens <= kGemvMaxTokens, gemm() above.
constexpr int kGemvMaxTokens = 4;
// Ops the backend folds into a decode GEMV (see backend_cuda.cu): all optional.
struct GemvFusion {
  // resid[t][o] += y[t][o] after y is stored; resid must not alias y or x.
  float* resid = nullptr;
  // The SwiGLU output of gemv_swiglu (set by it; gemv and gemv_group refuse it).
  float* glu_out = nullptr;
  // Long rows (more than 32 chunks) in a grid of at most deep_max_blocks blocks (the backend
  // passes its SM count; 0: never): each lane keeps several chunks' loads in flight (same
  // arithmetic; see gemv_kernel's Deep mode).
  int deep_max_blocks = 0;
  // A warp may compute up to 4 rows (raw chunks of each in flight at once) while the grid keeps
  // at least rows_min_blocks blocks (the backend passes its SM count; 0: one row per warp).
  // Same arithmetic per row.
  int rows_min_blocks = 0;
  // The fast arithmetic (the apps' default, not --exact): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and
  // Q5_K weights, in launches of at least 2,048 rows, take integer dot products with x quantized
  // to 16 bits per 32 elements (quant_dot.cuh), where the exact GEMV multiplies fp32 weights by
  // fp32 x.
  bool fast = false;
  // The device's SM count, which sizes the fast GEMV's grid (0: one block per kGemvWarps * rows rows).
  int n_sm = 0;
};
void gemv(cudaStream_t s, float* y, const Weight& w, const float* x, int n_tokens, const float* bias,
          const GemvFusion& f = {});
// One output of a grouped GEMV: y [n_tokens][w.ne1] = W x (+ bias [w.ne1]).
struct GemvOut {
  float* y = nullptr;
  Weight w;
  const float* bias = nullptr;
};
// Up to kMaxGemvGroup GEMVs that read the same x (q, k, v of a layer) in one launch: one grid
// covers the rows of all of them, each warp computes one row exactly as gemv() would. All
// weights have the same type and ne0; the y's are distinct and do not alias x.
// f carries no residual epilogue when n > 1.
constexpr int kMaxGemvGroup = 3;
void gemv_group(cudaStream_t s, const GemvOut* outs, int n, const float* x, int n_tokens,
                const GemvFusion& f);
// One output matrix of a grouped launch (gemv_group, gemv_swiglu, gemm_small) as its kernel sees
// it; its rows occupy blocks [the previous segment's block_end, block_end).
struct GroupSeg {
  float* y;
  const uint8_t* w;
  const float* bias;
  int64_t ne1;
  unsigned block_end;
};
// Lays out the n outputs of a grouped launch, rows_per_block rows per block, and returns the
// grid's block count. Checks each weight (rows a multiple of 32 wide, data 16-byte aligned,
// outs[0]'s type and row length); `op` names the caller in the errors.
unsigned group_segments(const GemvOut* outs, int n, int64_t rows_per_block, GroupSeg (&seg)[kMaxGemvGroup],
                        const char* op);
// The block count group_segments would return, without checks or layout (to compare shapes).
unsigned group_blocks(const GemvOut* outs, int n, int64_t rows_per_block);
// The segment holding block b and its first block, by selects (no dynamic indexing of a kernel
// parameter array).
__device__ __forceinline__ int segment_of(const GroupSeg (&seg)[kMaxGemvGroup], int n_seg, unsigned b) {
  return b < seg[0].block_end ? 0 : (n_seg < 3 || b < seg[1].block_end ? 1 : 2);
}
__device__ __forceinline__ GroupSeg block_segment(const GroupSeg (&seg)[kMaxGemvGroup], int n_seg, unsigned b,
                                                  unsigned& block0) {
  const int s = segment_of(seg, n_seg, b);
  block0 = s == 0 ? 0u : (s == 1 ? seg[0].block_end : seg[1].block_end);
  return s == 0 ? seg[0] : (s == 1 ? seg[1] : seg[2]);
}
// gate and up GEMVs over the same x and SwiGLU in one launch: each warp computes row o of both
// (same type, ne0 and ne1), stores gate.y[o], up.y[o] and out[o] = silu(gate) * up with the
// arithmetic of swiglu(). out may alias gate.y or up.y (same element, same thread), not x.
// f.rows_min_blocks and f.fast as in GemvFusion (f carries no resid or glu_out).
void gemv_swiglu(cudaStream_t s, const GemvOut& gate, const GemvOut& up, const float* x, int n_tokens,
                 float* out, const GemvFusion& f);
// Prefill (and batched steps that gemm_small does not take: F32 weights, more than
// kSmallMaxTokens tokens): cuBLAS. exact: x in two 16-bit passes (hi + lo); otherwise F16 and
// quantized weights take one fp16 pass (matmul.cu's precision note).
void gemm(cudaStream_t s, cublasHandle_t blas, GemmScratch& scratch, float* y, const Weight& w,
          const float* x, int n_tokens, const float* bias, bool exact);

// gemm_small.cu: y = W x for up to kSmallMaxTokens tokens on tensor cores, every weight byte read
// once; the numerics of gemm() (weights rounded to fp16 once, x in two 16-bit halves when exact,
// else one fp16 pass but for BF16), but Q6_K, Q8_0 and Q4_0 in fast mode up to 16 tokens, whose
// weights are not rounded (quant_mma.cuh). Not F32.
// Like gemv_group, up to kMaxGemvGroup matrices that share x (same type and ne0) run as one
// launch; a single matrix may add its result into resid (resid += y, as add() would), which
// must alias neither x nor y.
constexpr int kSmallMaxTokens = 64;
// x of a gemm_small that splits it once into 16-bit hi and lo halves for all its blocks: rows of
// at most kSmallMaxCols elements (the widest matrix input of the models we run is 27,648; wider
// rows are split by every block).
constexpr int64_t kSmallMaxCols = int64_t(1) << 16;
constexpr int64_t kSmallX16Bytes = 2 * kSmallMaxTokens * kSmallMaxCols * 2;
// A matrix of few row blocks is split over several blocks along K (how many depends on that
// matrix alone, so grouping changes no result), merged deterministically through
// scratch.gemm_partials / gemm_counters.
// n_sm: the device's SM count, which the launch shape targets.
void gemm_small(cudaStream_t s, const DecodeScratch& scratch, const GemvOut* outs, int n, const float* x,
                int n_tokens, float* resid, int n_sm, bool exact);

// rope.cu (RoPE and the KV-cache write)
void rope(cudaStream_t s, float* x, const int32_t* pos, int n_tokens, int n_head, int head_dim,
          const RopeParams& r);
void kv_store(cudaStream_t s, KVLayer& cache, const float* k, const float* v, const Batch& batch);
// RoPE of x0 (n_head0 heads, may be null) and of k (n_head_kv heads) at batch.pos, both in place,
// then the KV-cache write of the rotated k and of v: the three ops of rope(q), rope(k),
// kv_store(k, v) in one kernel, with the same arithmetic as the separate ones.
void rope_store(cudaStream_t s, float* x0, int n_head0, float* k, const float* v, KVLayer& cache,
                const Batch& batch, const RopeParams& r);

// attention.cu: fp32 scores and softmax over the cache (split-K for decode). With `fast`,
// flash_attention runs instead where it supports the cache. Returns the kernel family that ran
// ("flash_attention" or "attention"), the name the taps report.
const char* attention(cudaStream_t s, int n_sm, const DecodeScratch& scratch, float* out, const float* q,
                      const KVLayer& cache, const Batch& batch, const AttentionParams& p, bool fast);
// The head dims the attention kernels are built for.
constexpr bool attention_head_dim(int head_dim) {
  return head_dim == 64 || head_dim == 128 || head_dim == 256;
}
// f.template operator()<HD>() for a head_dim of attention_head_dim; any other is an error naming
// `op`.
template <class F>
void dispatch_head_dim(int head_dim, const char* op, F&& f) {
  switch (head_dim) {
    case 64:
      return f.template operator()<64>();
    case 128:
      return f.template operator()<128>();
    case 256:
      return f.template operator()<256>();
    default:
      QWEN_FAIL("cuda ", op, ": head_dim ", head_dim, " is not supported (64, 128 or 256)");
  }
}
// flash_attention.cu: the same attention on tensor cores (q and P rounded to the cache's 16-bit
// type, fp32 accumulation), for F16 and BF16 caches of head_dim 64, 128 or 256 with at most 16
// query heads per KV head:
// a prefill kernel for batches with long runs of one sequence (Batch::max_run), a split-K
// decode kernel sharing each K/V row among the query heads of its group otherwise.
bool flash_attention_supports(const KVLayer& cache, const AttentionParams& p);
void flash_attention(cudaStream_t s, int n_sm, const DecodeScratch& scratch, float* out, const float* q,
                     const KVLayer& cache, const Batch& batch, const AttentionParams& p);

// elementwise.cu
void swiglu(cudaStream_t s, float* out, const float* gate, const float* up, int64_t n);
void add(cudaStream_t s, float* out, const float* a, const float* b, int64_t n);
void argmax(cudaStream_t s, const DecodeScratch& scratch, int32_t* out, const float* x, int n_rows, int n);
void add_i32(cudaStream_t s, int32_t* x, int32_t delta, int n);

}  // namespace qwen::cuda
