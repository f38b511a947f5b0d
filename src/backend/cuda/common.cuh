// Shared by the CUDA op files: error checks, launch helpers, warp reductions, fp16/bf16 loads.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
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

// Device functions that the host runs too: the weight decoders of quant.cuh, which
// tests/ops/test_quant_decode.cu checks on the CPU against the CPU dequantizer (so CI, which has no
// GPU, tests them). The intrinsics they use have host twins here.
#define QWEN_HD __host__ __device__ __forceinline__
// #pragma unroll for loops in QWEN_HD functions (the host compiler does not know it).
#ifdef __CUDA_ARCH__
#define QWEN_UNROLL _Pragma("unroll")
#else
#define QWEN_UNROLL
#endif

QWEN_HD float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}
// __byte_perm(a, b, s): byte i of the result is byte (s >> 4i) & 7 of the 8 bytes {b:a}.
QWEN_HD uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t s) {
#ifdef __CUDA_ARCH__
  return __byte_perm(a, b, s);
#else
  const uint64_t v = (uint64_t(b) << 32) | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= uint32_t((v >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
#endif
}
// The low word of {hi:lo} >> sh: __funnelshift_r (sh taken mod 32) and __funnelshift_rc (sh
// clamped to 32).
QWEN_HD uint32_t funnel_r(uint32_t lo, uint32_t hi, uint32_t sh) {
#ifdef __CUDA_ARCH__
  return __funnelshift_r(lo, hi, sh);
#else
  return uint32_t(((uint64_t(hi) << 32) | lo) >> (sh & 31));
#endif
}
QWEN_HD uint32_t funnel_rc(uint32_t lo, uint32_t hi, uint32_t sh) {
#ifdef __CUDA_ARCH__
  return __funnelshift_rc(lo, hi, sh);
#else
  return uint32_t(((uint64_t(hi) << 32) | lo) >> (sh < 32 ? sh : 32));
#endif
}

QWEN_HD float half_to_float(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}
QWEN_HD float bf16_to_float(uint16_t b) {
  return bits_float(uint32_t(b) << 16);
}

}  // namespace qwen::cuda
