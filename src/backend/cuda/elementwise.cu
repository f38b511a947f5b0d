// SwiGLU, residual add, argmax and the int32 position advance: element-wise ops and a row reduction.
#include <cfloat>

#include "backend/cuda/ops.cuh"

namespace qwen::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void swiglu_kernel(float* __restrict__ out, const float* __restrict__ gate, const float* __restrict__ up,
                              int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  out[i] = g / (1.f + expf(-g)) * up[i];
}

// out may alias a or b: each element is read before it is written by the same thread.
__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

// One block per row. Ties go to the lowest index; NaN never wins (as the CPU's strict '>').
__global__ void argmax_kernel(int32_t* __restrict__ out, const float* __restrict__ x, int n) {
  __shared__ float s_val[kWarp];
  __shared__ int s_idx[kWarp];
  const float* xr = x + int64_t(blockIdx.x) * n;
  float best = -FLT_MAX;
  int best_i = -1;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = xr[i];
    if (best_i < 0 ? !(v != v) : v > best) best = v, best_i = i;  // first non-NaN, then strictly greater
  }
  // (value, index) order: larger value first, then smaller index; index -1 (nothing) loses.
  auto better = [](float v, int i, float bv, int bi) {
    if (i < 0) return false;
    if (bi < 0) return true;
    return v > bv || (v == bv && i < bi);
  };
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int i = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (better(v, i, best, best_i)) best = v, best_i = i;
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) s_val[warp] = best, s_idx[warp] = best_i;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x / kWarp;
    best = lane < n_warps ? s_val[lane] : -FLT_MAX;
    best_i = lane < n_warps ? s_idx[lane] : -1;
    for (int o = kWarp / 2; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, best, o);
      const int i = __shfl_xor_sync(0xffffffffu, best_i, o);
      if (better(v, i, best, best_i)) best = v, best_i = i;
    }
    if (lane == 0) out[blockIdx.x] = best_i < 0 ? 0 : best_i;  // an all-NaN row gives 0
  }
}

__global__ void add_i32_kernel(int32_t* x, int32_t delta, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += delta;
}

}  // namespace

void add_i32(cudaStream_t s, int32_t* x, int32_t delta, int n) {
  if (n <= 0) return;
  add_i32_kernel<<<unsigned(ceil_div(n, kThreads)), kThreads, 0, s>>>(x, delta, n);
  QWEN_CUDA_LAUNCH_CHECK();
}

void swiglu(cudaStream_t s, float* out, const float* gate, const float* up, int64_t n) {
  if (n == 0) return;
  swiglu_kernel<<<unsigned(ceil_div(n, kThreads)), kThreads, 0, s>>>(out, gate, up, n);
  QWEN_CUDA_LAUNCH_CHECK();
}

void add(cudaStream_t s, float* out, const float* a, const float* b, int64_t n) {
  if (n == 0) return;
  add_kernel<<<unsigned(ceil_div(n, kThreads)), kThreads, 0, s>>>(out, a, b, n);
  QWEN_CUDA_LAUNCH_CHECK();
}

void argmax(cudaStream_t s, int32_t* out, const float* x, int n_rows, int n) {
  if (n_rows == 0) return;
  QWEN_CHECK(n > 0 && n_rows > 0, "cuda argmax: bad shape ", n_rows, "x", n);
  argmax_kernel<<<unsigned(n_rows), 1024, 0, s>>>(out, x, n);
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace qwen::cuda
