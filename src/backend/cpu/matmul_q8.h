// The CPU backend's fast matmul (qdot.h): activations quantized to 8 bits once per call, then
// integer dot products with the weight rows where the file maps them.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/qdot.h"
#include "util/thread_pool.h"

namespace qwen::cpu {

class QuantizedMatmul {
 public:
  QuantizedMatmul() : k_(qdot_kernels()) {}
  const char* isa() const { return k_.isa; }
  // y = W x (+ bias) as Backend::matmul. Returns false, computing nothing, when W's type has no
  // integer kernel (the float types); the caller then runs the exact path.
  bool run(ThreadPool& pool, float* y, const Weight& w, const float* x, int n_tokens, const float* bias);

 private:
  const QDotKernels& k_;
  // Quantized activations of the current call, grown to the largest call seen and then reused
  // (no allocation in steady-state decode).
  std::vector<int8_t> q_;
  std::vector<float> d16_, s16_;
};

}  // namespace qwen::cpu
