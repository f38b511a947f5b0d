#include "backend/cpu/qdot.h"

namespace qwen::cpu {

namespace generic {
const QDotKernels& kernels();
}
#ifdef QWEN_CPU_AVX2
namespace avx2 {
const QDotKernels& kernels();
}
#endif

const QDotKernels& qdot_generic() {
  return generic::kernels();
}

const QDotKernels* qdot_avx2() {
#ifdef QWEN_CPU_AVX2
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2::kernels();
#endif
  return nullptr;
}

const QDotKernels& qdot_kernels() {
  static const QDotKernels& k = qdot_avx2() != nullptr ? *qdot_avx2() : qdot_generic();
  return k;
}

}  // namespace qwen::cpu
