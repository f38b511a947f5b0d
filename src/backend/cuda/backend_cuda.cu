// The CUDA backend: owns the device, one stream, the cuBLAS handle, the scratch arenas and the
// captured graphs; every op forwards to its op family's host entry point (ops.cuh).
//
// Memory: weights, KV cache and model scratch come from alloc() at load. The backend itself
// allocates at construction a cuBLAS workspace and the decode scratch (split-K attention partials,
// zeroed counters of the attention and argmax reductions), and grows the
// prefill GEMM scratch on the first prefill that needs it (never during capture). Steady-state
// decode therefore allocates nothing and never synchronizes with the host.
#include <algorithm>
#include <map>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "backend/cuda/ops.cuh"

namespace qwen {
namespace {

constexpr size_t kCublasWorkspace = size_t(32) << 20;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    QWEN_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop{};
    QWEN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    name_ = str("cuda: ", prop.name);
    n_sm_ = prop.multiProcessorCount;
    QWEN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    QWEN_CUBLAS_CHECK(cublasCreate(&blas_));
    QWEN_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    // A fixed workspace keeps cuBLAS from allocating inside a captured graph.
    workspace_ = alloc(kCublasWorkspace);
    QWEN_CUBLAS_CHECK(cublasSetWorkspace(blas_, workspace_, kCublasWorkspace));
    decode_.attn_partials = static_cast<float*>(alloc(cuda::kAttnPartialFloats * sizeof(float)));
    decode_.attn_counters = static_cast<unsigned*>(alloc(cuda::kMaxCounters * sizeof(unsigned)));
    decode_.argmax_keys = static_cast<unsigned long long*>(alloc(cuda::kMaxCounters * sizeof(unsigned long long)));
    decode_.argmax_counters = static_cast<unsigned*>(alloc(cuda::kMaxCounters * sizeof(unsigned)));
    QWEN_CUDA_CHECK(cudaMemsetAsync(decode_.attn_counters, 0, cuda::kMaxCounters * sizeof(unsigned), stream_));
    QWEN_CUDA_CHECK(cudaMemsetAsync(decode_.argmax_keys, 0, cuda::kMaxCounters * sizeof(unsigned long long), stream_));
    QWEN_CUDA_CHECK(cudaMemsetAsync(decode_.argmax_counters, 0, cuda::kMaxCounters * sizeof(unsigned), stream_));
  }

  ~CudaBackend() override {
    // Destructors must not throw: errors here are ignored (the process is tearing down).
    cudaStreamSynchronize(stream_);
    for (auto& [slot, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (scratch_.w16) cudaFree(scratch_.w16);
    if (scratch_.x16) cudaFree(scratch_.x16);
    for (void* p : {static_cast<void*>(decode_.attn_partials), static_cast<void*>(decode_.attn_counters),
                    static_cast<void*>(decode_.argmax_keys), static_cast<void*>(decode_.argmax_counters)})
      cudaFree(p);
    cublasDestroy(blas_);
    cudaFree(workspace_);
    cudaStreamDestroy(stream_);
  }

  DeviceKind kind() const override { return DeviceKind::CUDA; }
  std::string name() const override { return name_; }

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      QWEN_FAIL(name_, ": cannot allocate ", bytes, " bytes (", bytes >> 20, " MiB) of device memory: ", free_b,
                " bytes (", free_b >> 20, " MiB) free of ", total_b >> 20, " MiB (", cudaGetErrorString(e), ")");
    }
    return p;
  }
  void free(void* p) override {
    if (p) QWEN_CUDA_CHECK(cudaFree(p));
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    QWEN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    QWEN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }
  void synchronize() override { QWEN_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  size_t free_bytes() const override {
    size_t free_b = 0, total_b = 0;
    QWEN_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return free_b;
  }

  void embed(float* out, const Weight& table, const int32_t* ids, int n_tokens) override {
    cuda::embed(stream_, out, table, ids, n_tokens);
  }
  void rmsnorm(float* out, const float* x, const float* w, int64_t n_rows, int n, float eps) override {
    cuda::rmsnorm(stream_, out, x, w, n_rows, n, eps);
  }
  void matmul(float* y, const Weight& w, const float* x, int n_tokens, const float* bias) override {
    if (n_tokens == 0) return;
    if (n_tokens <= cuda::kGemvMaxTokens) {
      cuda::gemv(stream_, y, w, x, n_tokens, bias);
    } else {
      cuda::gemm(stream_, blas_, scratch_, y, w, x, n_tokens, bias);
    }
  }
  void rope(float* x, const int32_t* pos, int n_tokens, int n_head, int head_dim, float freq_base,
            RopeMode mode) override {
    cuda::rope(stream_, x, pos, n_tokens, n_head, head_dim, freq_base, mode);
  }
  void kv_store(KVLayer& cache, const float* k, const float* v, const Batch& batch) override {
    cuda::kv_store(stream_, cache, k, v, batch);
  }
  void attention(float* out, const float* q, const KVLayer& cache, const Batch& batch,
                 const AttentionParams& p) override {
    cuda::attention(stream_, n_sm_, decode_, out, q, cache, batch, p);
  }
  void swiglu(float* out, const float* gate, const float* up, int64_t n) override {
    cuda::swiglu(stream_, out, gate, up, n);
  }
  void add(float* out, const float* a, const float* b, int64_t n) override { cuda::add(stream_, out, a, b, n); }
  void argmax(int32_t* out, const float* x, int n_rows, int n) override {
    cuda::argmax(stream_, decode_, out, x, n_rows, n);
  }

  void add_i32(int32_t* x, int32_t delta, int n) override { cuda::add_i32(stream_, x, delta, n); }

  bool supports_graphs() const override { return true; }
  void begin_capture(int slot) override {
    QWEN_CHECK(capturing_ < 0, name_, ": begin_capture(", slot, ") while graph ", capturing_, " is being captured");
    // Global mode: any CUDA call from another thread that would break the capture fails loudly.
    QWEN_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    capturing_ = slot;
  }
  void end_capture() override {
    QWEN_CHECK(capturing_ >= 0, name_, ": end_capture() without begin_capture()");
    const int slot = capturing_;
    capturing_ = -1;
    cudaGraph_t graph = nullptr;
    QWEN_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    QWEN_CUDA_CHECK(e);
    auto it = graphs_.find(slot);
    if (it != graphs_.end()) {
      QWEN_CUDA_CHECK(cudaGraphExecDestroy(it->second));
      it->second = exec;
    } else {
      graphs_.emplace(slot, exec);
    }
  }
  void replay(int slot) override {
    auto it = graphs_.find(slot);
    QWEN_CHECK(it != graphs_.end(), name_, ": replay(", slot, "): no graph was captured in that slot");
    QWEN_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
  }

 private:
  int device_;
  std::string name_;
  int n_sm_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  cuda::DecodeScratch decode_;
  cuda::GemmScratch scratch_;
  std::map<int, cudaGraphExec_t> graphs_;
  int capturing_ = -1;
};

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: report none, never throw
    return 0;
  }
  return n;
}

std::unique_ptr<Backend> make_cuda_backend(int device_index) {
  const int n = cuda_device_count();
  QWEN_CHECK(device_index >= 0 && device_index < n, "cuda device ", device_index, " does not exist (",
             n, " CUDA device(s) found)");
  return std::make_unique<CudaBackend>(device_index);
}

}  // namespace qwen
