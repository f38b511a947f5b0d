// Shared by the CUDA op files: error checks, launch helpers, warp reductions, fp16/bf16 loads.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "util/check.h"

// Every CUDA runtime call goes through this: a failure names the call and the CUDA error.
#define QWEN_CUDA_CHECK(call)                                                                              \
  do {                                                                                                     \
    const cudaError_t qwen_err_ = (call);                                                                  \
    QWEN_CHECK(qwen_err_ == cudaSuccess, "CUDA error in ", #call, ": ", cudaGetErrorName(qwen_err_), " (", \
               cudaGetErrorString(qwen_err_), ")");                                                        \
  } while (0)

#define QWEN_CUBLAS_CHECK(call)                                                            \
  do {                                                                                     \
    const cublasStatus_t qwen_st_ = (call);                                                \
    QWEN_CHECK(qwen_st_ == CUBLAS_STATUS_SUCCESS, "cuBLAS error in ", #call, ": ",         \
               cublasGetStatusName(qwen_st_), " (", cublasGetStatusString(qwen_st_), ")"); \
  } while (0)

// After each kernel launch: catches bad launch configurations at the launch site.
#define QWEN_CUDA_LAUNCH_CHECK() QWEN_CUDA_CHECK(cudaGetLastError())

namespace qwen::cuda {

constexpr int kWarp = 32;

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a block whose size is a multiple of 32 (<= 1024). Every thread gets the result.
// `scratch` holds >= 32 floats of shared memory; the function may be called repeatedly.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int n_warps = blockDim.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // protects scratch from a previous call's readers
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

// Programmatic dependent launch (Hopper). Every kernel of this backend begins with pdl_begin():
// it waits until the previous kernel in the stream has completed and its writes are visible,
// then allows the next kernel to start launching. Kernels launched through launch() may
// therefore be scheduled while their predecessor drains, hiding the ~1 us launch gap between
// the ~400 small kernels of a decode step, while each kernel still sees every earlier result
// (the wait precedes all of its memory accesses, so ordering is as strict as plain launches).
// A kernel may read memory that no kernel writes (weights) before pdl_begin(), overlapping that
// latency with its predecessor's tail.
__device__ __forceinline__ void pdl_begin() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// QWEN_CUDA_PDL=0 launches without the programmatic-serialization attribute (plain ordering).
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("QWEN_CUDA_PDL");
    return e == nullptr || std::string_view(e) != "0";
  }();
  return on;
}

// Launches with `smem` bytes of dynamic shared memory (over 48 KiB raises the kernel's limit).
template <class... KArgs, class... Args>
void launch_smem(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args... args) {
  if (smem > 48 * 1024)
    QWEN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  QWEN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...));
}
template <class... KArgs, class... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t s, Args... args) {
  launch_smem(kernel, grid, block, 0, s, args...);
}

__device__ __forceinline__ float half_to_float(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}
__device__ __forceinline__ float bf16_to_float(uint16_t b) {
  return __uint_as_float(uint32_t(b) << 16);
}

}  // namespace qwen::cuda
