// Embedding lookup: out [n_tokens][n_embd] fp32 = dequant(table row ids[t]), table
// [n_vocab][n_embd] in its GGUF type. One thread decodes one 32-element chunk.
#include "backend/cuda/ops.cuh"
#include "backend/cuda/quant.cuh"

namespace qwen::cuda {
namespace {

template <GGMLType T>
__global__ void embed_kernel(float* __restrict__ out, const uint8_t* __restrict__ table, size_t row_bytes,
                             int64_t n_embd, int64_t n_vocab, const int32_t* __restrict__ ids) {
  pdl_begin();
  const int t = blockIdx.y;
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n_embd / kChunk) return;
  const int32_t id = ids[t];
  float4* o = reinterpret_cast<float4*>(out + t * n_embd + c * kChunk);
  if (id < 0 || id >= n_vocab) {
    // Ids are validated by the runtime; an out-of-range one reads nothing and yields NaN rows
    // so the fault is visible downstream instead of reading outside the table.
    const float nan = __int_as_float(0x7fc00000);
#pragma unroll
    for (int i = 0; i < kChunk / 4; ++i) o[i] = make_float4(nan, nan, nan, nan);
    return;
  }
  float v[kChunk];
  dequant_chunk<T>(table + int64_t(id) * row_bytes, c, v);
#pragma unroll
  for (int i = 0; i < kChunk / 4; ++i) o[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
}

}  // namespace

void embed(cudaStream_t s, float* out, const Weight& table, const int32_t* ids, int n_tokens) {
  QWEN_CHECK(table.ne0 % kChunk == 0, "cuda embed: n_embd = ", table.ne0, " is not a multiple of 32");
  QWEN_CHECK(reinterpret_cast<uintptr_t>(table.data) % 16 == 0,
             "cuda embed: table data is not 16-byte aligned");
  if (n_tokens == 0) return;
  QWEN_CHECK(n_tokens > 0 && n_tokens <= 65535, "cuda embed: bad n_tokens ", n_tokens);
  const int threads = 128;
  const dim3 grid(unsigned(ceil_div(table.ne0 / kChunk, threads)), unsigned(n_tokens));
  const auto* data = static_cast<const uint8_t*>(table.data);
  const size_t rb = table.row_bytes();
  dispatch_type(table.type, "embed", [&]<GGMLType T>() {
    launch(embed_kernel<T>, dim3(grid), dim3(threads), s, out, data, rb, table.ne0, table.ne1, ids);
  });
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace qwen::cuda
