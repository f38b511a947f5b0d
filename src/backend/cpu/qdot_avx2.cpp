// qdot_impl.h for AVX2 + FMA: CMakeLists.txt compiles this file with -mavx2 -mfma and defines
// QWEN_CPU_AVX2 where the compiler and target allow; qdot.cpp calls it only on CPUs that have both.
#ifdef QWEN_CPU_AVX2
#define QWEN_QDOT_NS avx2
#define QWEN_QDOT_ISA "avx2"
#include "backend/cpu/qdot_impl.h"
#endif
