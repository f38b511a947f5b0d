#include "backend/backend.h"

#include "util/check.h"

namespace qwen {

bool cuda_available() {
#ifdef QWEN_HAVE_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads, bool exact) {
  if (device == "cpu") return make_cpu_backend(n_threads, exact);
  if (device == "cuda" || (device == "auto" && cuda_available())) {
#ifdef QWEN_HAVE_CUDA
    QWEN_CHECK(cuda_device_count() > 0, "--device cuda: no CUDA GPU is available on this machine");
    return make_cuda_backend(0, exact);
#else
    QWEN_FAIL("--device cuda: this build of qwen.cu has no CUDA backend (configure with QWEN_CUDA=ON)");
#endif
  }
  if (device == "auto") return make_cpu_backend(n_threads, exact);
  QWEN_FAIL("unknown device '", device, "' (expected auto, cpu or cuda)");
}

}  // namespace qwen
