// Tensor-core building blocks shared by the mma kernels (gemm_small.cu, flash_attention.cu):
// 16-bit packing, mma.sync m16n8k16 with fp32 accumulation, ldmatrix and cp.async.
#pragma once

#include <type_traits>

#include "backend/cuda/common.cuh"

namespace qwen::cuda {

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

// As ldmatrix_x4, transposed: lane l receives the elements (2 (l % 4) + {0, 1}, l / 4) of each
// stored 8x8 matrix, which turns row-major [k][n] tiles into B fragments.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t a[4], const void* smem_row) {
  const unsigned addr = unsigned(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(addr));
}

// 16 bytes global -> shared without passing through registers; bytes == 0 writes zeros.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int bytes) {
  const unsigned addr = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(addr), "l"(gmem), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

}  // namespace qwen::cuda
