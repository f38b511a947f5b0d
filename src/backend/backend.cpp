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

const bool* CudaFusions::fusion(std::string_view name) const {
  return name == "resid"    ? &resid
         : name == "rope"   ? &rope
         : name == "qkv"    ? &qkv
         : name == "gateup" ? &gateup
                            : nullptr;
}

CudaFusions CudaFusions::parse(std::string_view names) {
  CudaFusions f = none();
  if (names == "0" || names.empty()) return f;
  for (;;) {
    const size_t comma = names.find(',');
    const std::string_view name = names.substr(0, comma);
    bool* flag = name == "deep" ? &f.deep : name == "rows" ? &f.rows : const_cast<bool*>(f.fusion(name));
    QWEN_CHECK(flag != nullptr, "unknown CUDA fusion '", name,
               "' (expected resid, rope, qkv, gateup, deep or rows)");
    *flag = true;
    if (comma == std::string_view::npos) return f;
    names = names.substr(comma + 1);
  }
}

std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads, bool exact) {
  if (device == "cpu") return make_cpu_backend(n_threads, exact);
  if (device == "cuda" || (device == "auto" && cuda_available())) {
#ifdef QWEN_HAVE_CUDA
    QWEN_CHECK(cuda_device_count() > 0, "--device cuda: no CUDA GPU is available on this machine");
    CudaOptions o;
    o.exact = exact;
    return make_cuda_backend(0, o);
#else
    QWEN_FAIL("--device cuda: this build of qwen.cu has no CUDA backend (configure with QWEN_CUDA=ON)");
#endif
  }
  if (device == "auto") return make_cpu_backend(n_threads, exact);
  QWEN_FAIL("unknown device '", device, "' (expected auto, cpu or cuda)");
}

}  // namespace qwen
