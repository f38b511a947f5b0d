// The narrow op interface every architecture's forward is written against (ARCHITECTURE §Rules 1).
// A backend owns memory on its device; every pointer passed to an op is that backend's memory
// (host memory for the CPU backend, device memory for CUDA). Ops are asynchronous on the backend's
// stream; nothing is copied to the host unless download() is called.
//
// Layout conventions (all row-major, "[rows][cols]", cols contiguous):
//  - activations are fp32: x [n_tokens][n], q [n_tokens][n_head][head_dim] ...
//  - a weight W is stored as in GGUF: ne0 = input dim (contiguous), ne1 = output dim,
//    i.e. W [ne1][ne0] with rows quantized in blocks of type W.type.
//  - KV cache: per layer K and V, each [n_seq][n_ctx][n_head_kv][head_dim] of type kv_type: F32,
//    F16, BF16, or Q8_0 (each head's row quantized in ggml blocks of 32: fp16 scale + 32 int8,
//    rounded as gguf's quantize_row; head_dim is a multiple of 32).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/ggml_types.h"
#include "util/check.h"

namespace qwen {

enum class DeviceKind { CPU, CUDA };
enum class RopeMode { Normal, Neox };  // Normal: pairs (2i, 2i+1) (llama); Neox: (i, i + d/2) (qwen)

// A weight matrix (or vector, ne1 = 1) resident in backend memory, still in its GGUF type.
struct Weight {
  GGMLType type = GGMLType::F32;
  int64_t ne0 = 0;  // input dim / row length (contiguous)
  int64_t ne1 = 1;  // output dim / number of rows
  const void* data = nullptr;
  size_t row_bytes() const { return qwen::row_bytes(type, ne0); }
  size_t nbytes() const { return row_bytes() * size_t(ne1); }
};

// One layer's KV cache in backend memory.
struct KVLayer {
  void* k = nullptr;  // [n_seq][n_ctx][n_head_kv][head_dim]
  void* v = nullptr;  // [n_seq][n_ctx][n_head_kv][head_dim]
  GGMLType type = GGMLType::F32;  // F32, F16, BF16 or Q8_0 (see runtime/kv_cache.h)
  int n_seq = 1;
  int n_ctx = 0;
  int n_head_kv = 0;
  int head_dim = 0;
};

// The tokens of one forward call, all arrays in backend memory, length n_tokens.
// Tokens of several sequences may be mixed (continuous batching); token t sits at position pos[t]
// of sequence seq[t] and attends to positions [0, pos[t]] of that sequence.
struct Batch {
  int n_tokens = 0;
  const int32_t* ids = nullptr;
  const int32_t* pos = nullptr;
  const int32_t* seq = nullptr;
  // Host-side hint for choosing kernels: the longest run of consecutive tokens of one sequence
  // (a prefill chunk: its length; a decode step: 1); 0 when unknown. Never changes a result
  // beyond the rounding of the kernel chosen.
  int max_run = 0;
};

// The rotation of a rope op, computed once at load from the model's config and weights
// (model/config.h rope_inv_freq / rope_mscale) so every backend applies the same scaling:
// pair i of a head at position p turns by the angle p * inv_freq[i], and both cos and sin are
// multiplied by mscale (YaRN's attention factor; 1 without scaling).
struct RopeParams {
  const float* inv_freq = nullptr;  // fp32 [head_dim / 2], backend memory
  float mscale = 1.f;
  RopeMode mode = RopeMode::Neox;
};

struct AttentionParams {
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  float scale = 0.f;  // usually 1/sqrt(head_dim)
};

// A debug tap's view of one named intermediate (Backend::tap): `data` is a host copy, fp32
// [rows][cols], valid during the call. `kernel` says what wrote it: "cpu" on a backend that runs
// every op as issued, on CUDA the kernel that ran, a fused one as "<kernel>[<fusion>]" (e.g.
// "gemv_group[qkv]", with CudaFusions' names).
struct Tapped {
  std::string_view name;  // the model's name for it ("Qcur"); equal on every backend
  int layer = -1;         // -1 outside the blocks
  const float* data = nullptr;
  int64_t rows = 0, cols = 0;
  std::string_view kernel;
};
using TapSink = std::function<void(const Tapped&)>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;  // "cpu (2 threads)", "cuda: NVIDIA H100 80GB HBM3"

  // ---- memory (allocation happens at load, never per token) ----
  virtual void* alloc(size_t bytes) = 0;  // throws qwen::Error naming needed and free bytes
  virtual void free(void* p) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;  // waits for pending work
  virtual void synchronize() = 0;
  // Bytes still available for alloc(); SIZE_MAX when unlimited (host).
  virtual size_t free_bytes() const = 0;
  // Host memory that download() fills fastest (page-locked for CUDA, which otherwise copies
  // through a staging buffer at a fraction of the bus's speed); plain heap memory by default.
  virtual void* alloc_host(size_t bytes) { return ::operator new(bytes); }
  virtual void free_host(void* p) { ::operator delete(p); }

  // ---- ops ----
  // out[t][:] = dequant(table row ids[t]);  table [n_vocab][n_embd], out [n_tokens][n_embd]
  virtual void embed(float* out, const Weight& table, const int32_t* ids, int n_tokens) = 0;
  // out[r][:] = x[r][:] / sqrt(mean(x[r]^2) + eps) * w[:];  x,out [n_rows][n], w fp32 [n].
  // out may equal x. Also used per head (qwen3 q_norm/k_norm: n_rows = n_tokens*n_head, n = head_dim).
  virtual void rmsnorm(float* out, const float* x, const float* w, int64_t n_rows, int n, float eps) = 0;
  // y[t][o] = sum_i W[o][i] * x[t][i] (+ bias[o] when bias != nullptr, fp32 [W.ne1]).
  // x [n_tokens][W.ne0], y [n_tokens][W.ne1].
  // W must hold data no op writes (uploaded weights): the CUDA backend starts reading it before
  // the previous op has finished.
  virtual void matmul(float* y, const Weight& w, const float* x, int n_tokens, const float* bias) = 0;
  // In-place rotary embedding of x [n_tokens][n_head][head_dim] at positions pos[t]: pair i
  // (i < head_dim/2) turns by theta = pos * r.inv_freq[i] (in fp64: ~1e5 rad at long contexts,
  // where fp32 would lose the low bits that decide sin/cos), cos and sin scaled by r.mscale.
  virtual void rope(float* x, const int32_t* pos, int n_tokens, int n_head, int head_dim,
                    const RopeParams& r) = 0;
  // Writes k, v [n_tokens][n_head_kv][head_dim] into the cache at (seq[t], pos[t]), converted to
  // the cache type (round to nearest even; Q8_0 as gguf's quantize_row).
  virtual void kv_store(KVLayer& cache, const float* k, const float* v, const Batch& batch) = 0;
  // Causal GQA attention of q [n_tokens][n_head][head_dim] over the cache (which already holds the
  // batch's own k/v); out [n_tokens][n_head][head_dim]. Head h reads kv head h / (n_head/n_head_kv).
  // The cache is read as its exact fp32 values (Q8_0: d * q); softmax and accumulation in fp32.
  virtual void attention(float* out, const float* q, const KVLayer& cache, const Batch& batch,
                         const AttentionParams& p) = 0;
  // out[i] = silu(gate[i]) * up[i]
  virtual void swiglu(float* out, const float* gate, const float* up, int64_t n) = 0;
  // out[i] = a[i] + b[i]; out may alias a or b.
  virtual void add(float* out, const float* a, const float* b, int64_t n) = 0;
  // out[r] = argmax_j x[r][j] (lowest index on ties); x [n_rows][n], out int32 [n_rows].
  virtual void argmax(int32_t* out, const float* x, int n_rows, int n) = 0;

  // x[i] += delta for i < n (int32, backend memory). Advances the positions of a decode step on
  // the device, so a captured step needs no per-token upload. The default goes through the host
  // (correct anywhere, but not capturable); device backends override it with a kernel.
  virtual void add_i32(int32_t* x, int32_t delta, int n) {
    std::vector<int32_t> h(size_t(n > 0 ? n : 0));
    download(h.data(), x, h.size() * sizeof(int32_t));
    for (int32_t& v : h) v += delta;
    upload(x, h.data(), h.size() * sizeof(int32_t));
  }

  // ---- debug taps ----
  // Hands `sink` the contents of x [rows][cols] (backend memory, fp32), which the op issued last
  // wrote, once that op has run. A backend that holds ops back to fuse them (CUDA) keeps the tap
  // until the fused kernel has run, so the tap sees what that kernel wrote; it then calls a copy
  // of `sink` at a later op or at synchronize(). Not while capturing a graph. The default
  // downloads x at once and names the kernel "cpu" (a backend that runs every op as issued).
  virtual void tap(std::string_view name, int layer, const float* x, int64_t rows, int64_t cols,
                   const TapSink& sink) {
    std::vector<float> h(size_t(rows * cols));
    download(h.data(), x, h.size() * sizeof(float));
    sink(Tapped{name, layer, h.data(), rows, cols, "cpu"});
  }

  // ---- graphs (optional) ----
  // A backend that supports graphs records the ops issued between begin_capture(slot) and
  // end_capture() into graph `slot` instead of running them (replacing what the slot held);
  // replay(slot) runs the recording again, asynchronously, with the same pointers. Per-step
  // scalars (positions, ids) must therefore live in backend memory and be changed by upload() or
  // ops between replays. No alloc/free/upload/download/synchronize inside a capture.
  virtual bool supports_graphs() const { return false; }
  virtual void begin_capture(int slot) {
    QWEN_FAIL(name(), ": graph capture (slot ", slot, ") is not supported");
  }
  virtual void end_capture() { QWEN_FAIL(name(), ": graph capture is not supported"); }
  virtual void replay(int slot) {
    QWEN_FAIL(name(), ": graph replay (slot ", slot, ") is not supported");
  }
};

// "cpu" or "cuda" (or "auto": cuda when a GPU is usable, else cpu). Throws naming the device.
// n_threads applies to the cpu backend only; exact picks the oracle arithmetic of either backend
// (make_cpu_backend, make_cuda_backend).
std::unique_ptr<Backend> make_backend(const std::string& device, int n_threads = 0, bool exact = true);
bool cuda_available();  // built with CUDA and a GPU is present

// Implemented by backend/cpu and (when built) backend/cuda.
// n_threads 0: all hardware threads. exact: every op is the fp32 oracle (what tests compare
// against); otherwise matmuls of quantized weights quantize the activations to 8 bits and use
// integer dot products (backend/cpu/qdot.h), several times faster and slightly less accurate.
std::unique_ptr<Backend> make_cpu_backend(int n_threads, bool exact = true);
// The CUDA backend's decode fusions (backend_cuda.cu holds back one op and merges it with the
// next) and GEMV shapes; the defaults are what measured fastest (docs/BENCHMARKS.md), none() is
// the unfused path the fusion tests compare against.
// Fusions that measured slower are deleted, not kept here (ARCHITECTURE §Rules 3).
struct CudaFusions {
  bool resid = true;    // residual add into the GEMV / gemm_small epilogue
  bool rope = true;     // rope(q), rope(k) and kv_store as one kernel
  bool qkv = true;      // GEMVs sharing x (q/k/v) as one launch
  bool gateup = true;   // gate and up GEMVs with SwiGLU as one launch
  bool deep = true;     // long-row GEMVs load several chunks per lane first (same arithmetic)
  bool rows = true;     // several rows per GEMV warp where the grid still fills the GPU (same arithmetic)
  static CudaFusions none() { return {false, false, false, false, false, false}; }
  // From a comma-separated list of the names above ("0" or "": none); an unknown name is an error.
  static CudaFusions parse(std::string_view names);
  // The flag of the fusion named `name` (resid, rope, qkv or gateup: the fused kernels, not the
  // GEMV shapes deep and rows), or nullptr.
  const bool* fusion(std::string_view name) const;
};

struct CudaOptions {
  bool exact = true;  // see make_cuda_backend
  CudaFusions fusions;
  // Test hook, never set outside tests: the name of a fusion (resid, rope, qkv or gateup, which
  // must be on) whose fused launches then store a wrong result, token 0's row of their first
  // output doubled (qkv: q, gateup: the SwiGLU product, resid: the residual sum, rope: the
  // rotated q), so a test can check that qwen-diff's taps name that output as the first
  // divergence (tests/ops/test_tap_fault.cpp). "" (the default): none.
  std::string plant_fault;
};

#ifdef QWEN_HAVE_CUDA
// exact: the GEMMs of more than 4 tokens multiply x as two fp16 halves (hi + lo, ~22 bits) and
// attention runs in fp32; otherwise one fp16 pass for F16 and quantized weights (cuda/matmul.cu,
// cuda/gemm_small.cu; at 5-16 tokens Q6_K, Q8_0 and Q4_0 weights enter the mma as integers,
// cuda/quant_mma.cuh) and attention over an F16 cache on tensor cores (cuda/flash_attention.cu).
// Decode GEMVs are fp32 when exact; otherwise those of most 4- to 8-bit types take integer dot
// products with x in 16 bits (cuda/quant_dot.cuh).
std::unique_ptr<Backend> make_cuda_backend(int device_index, const CudaOptions& options = {});
int cuda_device_count();  // 0 when no driver / no GPU (never throws)
#endif

}  // namespace qwen
