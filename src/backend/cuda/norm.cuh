// The RMSNorm of one row by a whole 256-thread block, shared by the rmsnorm kernel and the GEMV
// epilogue that normalizes the residual stream it has just updated (matmul.cu), so both give
// bitwise the same result.
#pragma once

#include "backend/cuda/common.cuh"

namespace qwen::cuda {

constexpr int kNormBlock = 256;

// out[:n] = x[:n] / sqrt(mean(x^2) + eps) * w[:n], fp32; called by all kNormBlock threads of a
// block. x is read through L2 (ld.cg): the GEMV epilogue reads rows other blocks wrote.
// `scratch`: >= 32 floats of shared memory.
__device__ __forceinline__ void rmsnorm_block_row(float* __restrict__ out, const float* __restrict__ x,
                                                  const float* __restrict__ w, int n, float eps,
                                                  float* scratch) {
  float ss = 0.f;
  for (int i = threadIdx.x; i < n; i += kNormBlock) {
    const float v = __ldcg(x + i);
    ss = fmaf(v, v, ss);
  }
  ss = block_sum(ss, scratch);
  const float scale = rsqrtf(ss / float(n) + eps);
  for (int i = threadIdx.x; i < n; i += kNormBlock) out[i] = __ldcg(x + i) * scale * w[i];
}

}  // namespace qwen::cuda
