// RMSNorm: out[r][:] = x[r][:] / sqrt(mean(x[r]^2) + eps) * w[:], fp32 throughout.
// Rows of <= 256 elements (per-head q/k norms) take one warp each; longer rows a 256-thread block.
#include "backend/cuda/ops.cuh"

namespace qwen::cuda {
namespace {

constexpr int kBlock = 256;

__global__ void rmsnorm_block_kernel(float* __restrict__ out, const float* __restrict__ x,
                                     const float* __restrict__ w, int n, float eps) {
  pdl_begin();
  __shared__ float scratch[kWarp];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * n;
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum(ss, scratch);
  const float scale = rsqrtf(ss / float(n) + eps);
  float* o = out + r * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = xr[i] * scale * w[i];
}

__global__ void rmsnorm_warp_kernel(float* __restrict__ out, const float* __restrict__ x,
                                    const float* __restrict__ w, int64_t n_rows, int n, float eps) {
  pdl_begin();
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (r >= n_rows) return;
  const float* xr = x + r * n;
  float ss = 0.f;
  for (int i = lane; i < n; i += kWarp) ss = fmaf(xr[i], xr[i], ss);
  ss = warp_sum(ss);
  const float scale = rsqrtf(ss / float(n) + eps);
  float* o = out + r * n;
  for (int i = lane; i < n; i += kWarp) o[i] = xr[i] * scale * w[i];
}

}  // namespace

void rmsnorm(cudaStream_t s, float* out, const float* x, const float* w, int64_t n_rows, int n, float eps) {
  if (n_rows == 0) return;
  QWEN_CHECK(n > 0 && n_rows > 0, "cuda rmsnorm: bad shape ", n_rows, "x", n);
  if (n <= 256) {
    launch(rmsnorm_warp_kernel, dim3(unsigned(ceil_div(n_rows, kBlock / kWarp))), dim3(kBlock), s, out, x, w,
           n_rows, n, eps);
  } else {
    QWEN_CHECK(n_rows <= 0x7fffffff, "cuda rmsnorm: too many rows ", n_rows);
    launch(rmsnorm_block_kernel, dim3(unsigned(n_rows)), dim3(kBlock), s, out, x, w, n, eps);
  }
  QWEN_CUDA_LAUNCH_CHECK();
}

}  // namespace qwen::cuda
