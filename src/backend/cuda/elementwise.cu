// SwiGLU, residual add, argmax and the int32 position advance: element-wise ops and a row reduction.
#include <algorithm>

#include "backend/cuda/ops.cuh"

namespace qwen::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void swiglu_kernel(float* __restrict__ out, const float* __restrict__ gate,
                              const float* __restrict__ up, int64_t n) {
  pdl_begin();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  out[i] = g / (1.f + expf(-g)) * up[i];
}

// out may alias a or b: each element is read before it is written by the same thread.
__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  pdl_begin();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

// Argmax over rows of up to ~10^6 elements with several blocks per row. Each candidate is one
// 64-bit key, (order-preserving bits of the value) << 32 | ~index, so the largest key is the
// largest value and, among equal values, the lowest index. NaN never wins (as the CPU's strict
// '>' comparison); an all-NaN row gives index 0. Blocks combine through atomicMax; the last
// block of a row writes the index and resets the row's key and counter for the next replay.
constexpr int kArgmaxThreads = 256;
constexpr int kArgmaxPerThread = 16;

__device__ __forceinline__ unsigned long long argmax_key(float v, int i) {
  if (v != v) return 0ull;
  const uint32_t u = __float_as_uint(v);
  const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(ordered) << 32) | static_cast<uint32_t>(~uint32_t(i));
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const unsigned long long other = __shfl_xor_sync(0xffffffffu, v, o);
    v = other > v ? other : v;
  }
  return v;
}

__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(int32_t* __restrict__ out, const float* __restrict__ x, int n, unsigned long long* keys,
                  unsigned* counters) {
  pdl_begin();
  __shared__ unsigned long long s_best[kArgmaxThreads / kWarp];
  __shared__ bool s_last;
  const int row = blockIdx.y;
  const float* xr = x + int64_t(row) * n;
  unsigned long long best = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned long long k = argmax_key(xr[i], i);
    best = k > best ? k : best;
  }
  best = warp_max_u64(best);
  if (threadIdx.x % kWarp == 0) s_best[threadIdx.x / kWarp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kArgmaxThreads / kWarp; ++w) best = s_best[w] > best ? s_best[w] : best;
    atomicMax(&keys[row], best);
    __threadfence();
    s_last = atomicAdd(&counters[row], 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (s_last && threadIdx.x == 0) {
    __threadfence();
    const unsigned long long k = atomicExch(&keys[row], 0ull);
    out[row] = k == 0 ? 0 : int32_t(~uint32_t(k & 0xffffffffu));
    counters[row] = 0;
  }
}

__global__ void add_i32_kernel(int32_t* x, int32_t delta, int n) {
  pdl_begin();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += delta;
}

}  // namespace

void add_i32(cudaStream_t s, int32_t* x, int32_t delta, int n) {
  if (n <= 0) return;
  launch(add_i32_kernel, dim3(unsigned(ceil_div(n, kThreads))), dim3(kThreads), s, x, delta, n);
  QWEN_CUDA_LAUNCH_CHECK();
}

void swiglu(cudaStream_t s, float* out, const float* gate, const float* up, int64_t n) {
  if (n == 0) return;
  launch(swiglu_kernel, dim3(unsigned(ceil_div(n, kThreads))), dim3(kThreads), s, out, gate, up, n);
  QWEN_CUDA_LAUNCH_CHECK();
}

void add(cudaStream_t s, float* out, const float* a, const float* b, int64_t n) {
  if (n == 0) return;
  launch(add_kernel, dim3(unsigned(ceil_div(n, kThreads))), dim3(kThreads), s, out, a, b, n);
  QWEN_CUDA_LAUNCH_CHECK();
}

void argmax(cudaStream_t s, const DecodeScratch& scratch, int32_t* out, const float* x, int n_rows, int n) {
  if (n_rows == 0) return;
  QWEN_CHECK(n > 0 && n_rows > 0, "cuda argmax: bad shape ", n_rows, "x", n);
  const unsigned blocks = unsigned(std::min<int64_t>(ceil_div(n, kArgmaxThreads * kArgmaxPerThread), 1024));
  for (int r0 = 0; r0 < n_rows; r0 += kMaxCounters) {  // rows beyond the counters: further launches
    const int rows = std::min(kMaxCounters, n_rows - r0);
    launch(argmax_kernel, dim3(blocks, unsigned(rows)), dim3(kArgmaxThreads), s, out + r0,
           x + int64_t(r0) * n, n, scratch.argmax_keys, scratch.argmax_counters);
    QWEN_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace qwen::cuda
