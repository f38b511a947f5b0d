// The CUDA backend: owns the device, one stream, the cuBLAS handle, the scratch arenas and the
// captured graphs; every op forwards to its op family's host entry point (ops.cuh).
//
// Memory: weights, KV cache and model scratch come from alloc() at load. The backend itself
// allocates at construction a cuBLAS workspace and the decode scratch (split-K attention partials,
// zeroed counters of the attention and argmax reductions), and grows the
// prefill GEMM scratch on the first prefill that needs it (never during capture). Steady-state
// decode therefore allocates nothing and never synchronizes with the host.
//
// Fusion (ARCHITECTURE §Rules 3: the unfused path stays, as the oracle). A decode step issues ~17 small
// kernels per layer, and at batch 1 each costs more in launch and latency than in bytes. So the
// backend holds back the last fusable op and merges it with the next one when they form one of
// these patterns (decode-sized GEMV, n_tokens <= kGemvMaxTokens, unless marked "also gemm_small"),
// named as in CudaFusions:
//   resid:  matmul(y, W, a) ; add(r, r, y)     -> one GEMV with the residual epilogue (stores y too);
//                                                 also gemm_small (batched decode, <= 64 tokens)
//   rope:   rope(q) ; rope(k) ; kv_store(k, v) -> one rope + cache-write kernel (any token count)
//   qkv:    matmul(q, Wq, a) ; matmul(k, Wk, a) ; matmul(v, Wv, a)
//                                              -> one GEMV launch over the rows of all three (same
//                                                 x, weight type and row length; up to 3); also
//                                                 gemm_small, which groups gate and up this way too
//   gateup: matmul(g, Wg, a) ; matmul(u, Wu, a) ; swiglu(o, g, u)
//                                              -> one GEMV computing the gate and up rows of each
//                                                 output together, storing g, u and o
// Every output the separate ops would write is still written, so a later op sees the same memory,
// and every fusion keeps the arithmetic of the separate ops (bitwise-equal results). Any other
// call (including upload/download/synchronize and the capture calls) first launches what is held
// back. "deep" and "rows" (not fusions, same arithmetic, off in none(), which stays the original
// path): a GEMV of long rows whose grid fits one block per SM loads several chunks per lane before
// using them; a GEMV warp computes up to 4 rows where the grid still covers the SMs (matmul.cu).
// Measured on H100 (tg128 Q8_0 of the 0.5B shape, docs/BENCHMARKS.md): resid and rope each gained
// ~2%, together ~5% (668 -> 700 tok/s); qkv and gateup remove 4 of the 12 launches of a decode
// layer without adding work to any warp's critical path (gateup only doubles its independent
// loads). Two fusions lost their measurement and were deleted: SwiGLU as the epilogue of the up
// GEMV (727 -> 697: a dependent load on the GEMV's critical path, where a separate SwiGLU overlaps
// its neighbours through programmatic dependent launch), and the RMSNorm inside the following
// GEMV (Q8_0 826 -> 778, Q4_0 869 -> 814, F16 806 -> 756), as was the RMSNorm as the epilogue of
// the GEMV that adds into the residual (Q8_0 936 -> 907).
//
// Taps (Backend::tap: qwen-diff, qwen-logits --dump) see what runs. A tap of an output of the
// held-back op waits in taps_ until the kernel that computes it has run, fused or not, and is
// then copied to the host; every other tap is copied at once (its op has run). Each names the
// kernel that wrote it ("gemv_group[qkv]"). The one change a tap makes is where gateup stores
// the gate (or up) row that its SwiGLU product overwrites in place: into tap scratch, for the tap
// to read (same kernel, same arithmetic). CudaOptions::plant_fault (a test hook) doubles token 0's
// row of one fusion's first output right after each of its launches.

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/ops.cuh"

namespace qwen {
namespace {

constexpr size_t kCublasWorkspace = size_t(32) << 20;

// The op held back for fusion (see the file comment).
struct Pending {
  enum class Kind { None, Matmul, Rope } kind = Kind::None;
  // Matmul (GEMV or gemm_small): mm[i].y = mm[i].W x (+ bias), n_mm of them sharing x (grouped
  // by qkv or gateup).
  cuda::GemvOut mm[cuda::kMaxGemvGroup];
  int n_mm = 0;
  const float* x = nullptr;
  int n_tokens = 0;
  // Rope: up to two in-place ropes over the same positions (q first, then k).
  float* rope_x[2] = {nullptr, nullptr};
  int rope_heads[2] = {0, 0};
  int n_rope = 0;
  const int32_t* pos = nullptr;
  int head_dim = 0;
  RopeParams rope;
};

// A tap of an output of the held-back op, waiting for the kernel that computes it.
struct HeldTap {
  std::string name;
  int layer;
  const float* x;  // device memory [rows][cols]
  int64_t rows, cols;
  TapSink sink;
};

// Whether float ranges a[0..na) and b[0..nb) share memory.
bool overlaps(const float* a, int64_t na, const float* b, int64_t nb) {
  const auto ia = reinterpret_cast<uintptr_t>(a), ib = reinterpret_cast<uintptr_t>(b);
  return ia < ib + uintptr_t(nb) * sizeof(float) && ib < ia + uintptr_t(na) * sizeof(float);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const CudaOptions& o)
      : device_(device), exact_(o.exact), fuse_(o.fusions), fault_(o.plant_fault) {
    if (!fault_.empty()) {
      const bool* on = fuse_.fusion(fault_);
      QWEN_CHECK(on != nullptr, "CudaOptions::plant_fault '", fault_,
                 "' is not a fusion (expected resid, rope, qkv or gateup)");
      QWEN_CHECK(*on, "CudaOptions::plant_fault '", fault_,
                 "': that fusion is off in CudaOptions::fusions, so no launch would carry the fault");
    }
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
    decode_.argmax_keys =
        static_cast<unsigned long long*>(alloc(cuda::kMaxCounters * sizeof(unsigned long long)));
    decode_.argmax_counters = static_cast<unsigned*>(alloc(cuda::kMaxCounters * sizeof(unsigned)));
    decode_.gemm_partials = static_cast<float*>(alloc(cuda::kGemmPartialFloats * sizeof(float)));
    decode_.gemm_counters = static_cast<unsigned*>(alloc(cuda::kMaxCounters * sizeof(unsigned)));
    decode_.gemm_x16 = alloc(cuda::kSmallX16Bytes);
    QWEN_CUDA_CHECK(
        cudaMemsetAsync(decode_.attn_counters, 0, cuda::kMaxCounters * sizeof(unsigned), stream_));
    QWEN_CUDA_CHECK(
        cudaMemsetAsync(decode_.argmax_keys, 0, cuda::kMaxCounters * sizeof(unsigned long long), stream_));
    QWEN_CUDA_CHECK(
        cudaMemsetAsync(decode_.argmax_counters, 0, cuda::kMaxCounters * sizeof(unsigned), stream_));
    QWEN_CUDA_CHECK(
        cudaMemsetAsync(decode_.gemm_counters, 0, cuda::kMaxCounters * sizeof(unsigned), stream_));
  }

  ~CudaBackend() override {
    // Destructors must not throw: errors here are ignored (the process is tearing down); a
    // held-back op is dropped with the memory it would have written.
    cudaStreamSynchronize(stream_);
    for (auto& [slot, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (scratch_.w16) cudaFree(scratch_.w16);
    if (scratch_.x16) cudaFree(scratch_.x16);
    if (tap_stage_) cudaFree(tap_stage_);
    for (void* p : {static_cast<void*>(decode_.attn_partials), static_cast<void*>(decode_.attn_counters),
                    static_cast<void*>(decode_.argmax_keys), static_cast<void*>(decode_.argmax_counters),
                    static_cast<void*>(decode_.gemm_partials), static_cast<void*>(decode_.gemm_counters)})
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
      QWEN_FAIL(name_, ": cannot allocate ", bytes, " bytes (", bytes >> 20,
                " MiB) of device memory: ", free_b, " bytes (", free_b >> 20, " MiB) free of ", total_b >> 20,
                " MiB (", cudaGetErrorString(e), ")");
    }
    return p;
  }
  void free(void* p) override {
    flush();
    if (p) QWEN_CUDA_CHECK(cudaFree(p));
  }
  void* alloc_host(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaMallocHost(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      QWEN_FAIL(name_, ": cannot allocate ", bytes, " bytes (", bytes >> 20, " MiB) of page-locked host memory: ",
                cudaGetErrorString(e));
    }
    return p;
  }
  void free_host(void* p) override {
    flush();
    if (p) QWEN_CUDA_CHECK(cudaFreeHost(p));
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    flush();
    QWEN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    flush();
    QWEN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }
  void synchronize() override {
    flush();
    QWEN_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  size_t free_bytes() const override {
    size_t free_b = 0, total_b = 0;
    QWEN_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return free_b;
  }

  void embed(float* out, const Weight& table, const int32_t* ids, int n_tokens) override {
    flush();
    cuda::embed(stream_, out, table, ids, n_tokens);
    ran("embed");
  }
  void rmsnorm(float* out, const float* x, const float* w, int64_t n_rows, int n, float eps) override {
    flush();
    cuda::rmsnorm(stream_, out, x, w, n_rows, n, eps);
    ran("rmsnorm");
  }
  void matmul(float* y, const Weight& w, const float* x, int n_tokens, const float* bias) override {
    if (n_tokens == 0) return flush();
    // Held back: decode GEMVs, and the few-token tensor-core GEMMs of batched decode (gemm_small,
    // which groups matrices and adds a residual like the GEMV, nothing else).
    const bool small =
        n_tokens > cuda::kGemvMaxTokens && n_tokens <= cuda::kSmallMaxTokens && w.type != GGMLType::F32;
    if (!(fuse_.resid || fuse_.qkv || fuse_.gateup) || (n_tokens > cuda::kGemvMaxTokens && !small)) {
      flush();
      if (n_tokens <= cuda::kGemvMaxTokens) {
        cuda::gemv(stream_, y, w, x, n_tokens, bias, plain_fusion());
        return ran("gemv");
      }
      if (small) {
        const cuda::GemvOut out{y, w, bias};
        cuda::gemm_small(stream_, decode_, &out, 1, x, n_tokens, nullptr, n_sm_, exact_);
        return ran("gemm_small");
      }
      cuda::gemm(stream_, blas_, scratch_, y, w, x, n_tokens, bias, exact_);
      return ran("gemm");
    }
    if (joins_group(y, w, x, n_tokens)) {
      held_.mm[held_.n_mm++] = cuda::GemvOut{y, w, bias};
      return;
    }
    flush();
    held_.kind = Pending::Kind::Matmul;
    held_.mm[0] = cuda::GemvOut{y, w, bias};
    held_.n_mm = 1;
    held_.x = x, held_.n_tokens = n_tokens;
  }
  void rope(float* x, const int32_t* pos, int n_tokens, int n_head, int head_dim,
            const RopeParams& r) override {
    const bool pair = held_.kind == Pending::Kind::Rope && held_.n_rope == 1 && held_.pos == pos &&
                      held_.n_tokens == n_tokens && held_.head_dim == head_dim &&
                      held_.rope.inv_freq == r.inv_freq && held_.rope.mscale == r.mscale &&
                      held_.rope.mode == r.mode && held_.rope_x[0] != x;
    if (pair) {
      held_.rope_x[1] = x, held_.rope_heads[1] = n_head, held_.n_rope = 2;
      return;
    }
    flush();
    if (!fuse_.rope) {
      cuda::rope(stream_, x, pos, n_tokens, n_head, head_dim, r);
      return ran("rope");
    }
    held_.kind = Pending::Kind::Rope;
    held_.rope_x[0] = x, held_.rope_heads[0] = n_head, held_.n_rope = 1;
    held_.pos = pos, held_.n_tokens = n_tokens, held_.head_dim = head_dim, held_.rope = r;
  }
  void kv_store(KVLayer& cache, const float* k, const float* v, const Batch& batch) override {
    if (held_.kind == Pending::Kind::Rope) {
      const int last = held_.n_rope - 1;
      const bool fuse = held_.rope_x[last] == k && held_.rope_heads[last] == cache.n_head_kv &&
                        held_.pos == batch.pos && held_.n_tokens == batch.n_tokens &&
                        held_.head_dim == cache.head_dim && v != held_.rope_x[0] && v != k;
      if (fuse) {
        const Pending p = held_;
        held_.kind = Pending::Kind::None;
        float* x0 = last == 1 ? p.rope_x[0] : nullptr;
        const int h0 = last == 1 ? p.rope_heads[0] : 0;
        cuda::rope_store(stream_, x0, h0, p.rope_x[last], v, cache, batch, p.rope);
        plant("rope", p.rope_x[0], int64_t(p.rope_heads[0]) * p.head_dim);
        return ran("rope_store[rope]");
      }
    }
    flush();
    cuda::kv_store(stream_, cache, k, v, batch);
    ran("kv_store");
  }
  void attention(float* out, const float* q, const KVLayer& cache, const Batch& batch,
                 const AttentionParams& p) override {
    flush();
    ran(cuda::attention(stream_, n_sm_, decode_, out, q, cache, batch, p, !exact_));
  }
  void swiglu(float* out, const float* gate, const float* up, int64_t n) override {
    if (fuse_.gateup && held_.kind == Pending::Kind::Matmul && held_.n_mm == 2 &&
        held_.n_tokens <= cuda::kGemvMaxTokens) {
      cuda::GemvOut g = held_.mm[0], u = held_.mm[1];
      // out is stored while other warps read x.
      const bool fuse = gate == g.y && up == u.y && g.w.ne1 == u.w.ne1 &&
                        n == int64_t(held_.n_tokens) * g.w.ne1 && out != held_.x;
      if (fuse) {
        const Pending p = held_;
        held_.kind = Pending::Kind::None;
        // A waiting tap of the gate (or up) that out overwrites in place reads the copy the
        // kernel stores into tap scratch instead.
        for (cuda::GemvOut* o : {&g, &u}) {
          if (o->y == out && tapped(out, n)) o->y = stage_taps(out, n);
        }
        cuda::gemv_swiglu(stream_, g, u, p.x, p.n_tokens, out, plain_fusion());
        plant("gateup", out, g.w.ne1);
        return ran("gemv_swiglu[gateup]");
      }
    }
    flush();
    cuda::swiglu(stream_, out, gate, up, n);
    ran("swiglu");
  }
  void add(float* out, const float* a, const float* b, int64_t n) override {
    if (fuse_.resid && held_.kind == Pending::Kind::Matmul && held_.n_mm == 1) {
      const bool fuse = b == held_.mm[0].y && out == a && out != held_.mm[0].y && out != held_.x &&
                        n == int64_t(held_.n_tokens) * held_.mm[0].w.ne1;
      if (fuse) return launch_matmul(out);
    }
    flush();
    cuda::add(stream_, out, a, b, n);
    ran("add");
  }
  void argmax(int32_t* out, const float* x, int n_rows, int n) override {
    flush();
    cuda::argmax(stream_, decode_, out, x, n_rows, n);
    ran("argmax");
  }

  void add_i32(int32_t* x, int32_t delta, int n) override {
    flush();
    cuda::add_i32(stream_, x, delta, n);
    ran("add_i32");
  }

  void tap(std::string_view name, int layer, const float* x, int64_t rows, int64_t cols,
           const TapSink& sink) override {
    QWEN_CHECK(capturing_ < 0, name_, ": tap of ", name, " while graph ", capturing_, " is being captured");
    HeldTap t{std::string(name), layer, x, rows, cols, sink};
    if (held_writes(x, rows * cols)) {
      taps_.push_back(std::move(t));
    } else {
      deliver(t);  // written by a kernel already launched; the held-back op does not touch it
    }
  }

  bool supports_graphs() const override { return true; }
  void begin_capture(int slot) override {
    flush();
    QWEN_CHECK(capturing_ < 0, name_, ": begin_capture(", slot, ") while graph ", capturing_,
               " is being captured");
    // Global mode: any CUDA call from another thread that would break the capture fails loudly.
    QWEN_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    capturing_ = slot;
  }
  void end_capture() override {
    QWEN_CHECK(capturing_ >= 0, name_, ": end_capture() without begin_capture()");
    flush();
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
    flush();
    auto it = graphs_.find(slot);
    QWEN_CHECK(it != graphs_.end(), name_, ": replay(", slot, "): no graph was captured in that slot");
    QWEN_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
  }

 private:
  // Launches the held-back op, if any, as it was issued.
  void flush() {
    const Pending p = held_;
    held_.kind = Pending::Kind::None;
    switch (p.kind) {
      case Pending::Kind::None:
        return;
      case Pending::Kind::Matmul:
        held_ = p;
        return launch_matmul(nullptr);
      case Pending::Kind::Rope:
        for (int i = 0; i < p.n_rope; ++i) {
          cuda::rope(stream_, p.rope_x[i], p.pos, p.n_tokens, p.rope_heads[i], p.head_dim, p.rope);
        }
        return ran("rope");
    }
  }
  // The GemvFusion of a GEMV with nothing fused: the GEMV shapes and the arithmetic.
  cuda::GemvFusion plain_fusion() const {
    cuda::GemvFusion f;
    f.fast = !exact_;
    f.n_sm = n_sm_;
    f.deep_max_blocks = fuse_.deep ? n_sm_ : 0;
    f.rows_min_blocks = fuse_.rows ? n_sm_ : 0;
    return f;
  }
  // Whether matmul(y, w, x, n_tokens) may join the held-back GEMV(s) in one launch: same x, token
  // count, weight type and row length, a new output that is no input and no other output. With
  // qkv off, gateup still holds one pair for a following SwiGLU (launched separately otherwise).
  bool joins_group(const float* y, const Weight& w, const float* x, int n_tokens) const {
    const Pending& h = held_;
    if (h.kind != Pending::Kind::Matmul || h.x != x || h.n_tokens != n_tokens ||
        h.n_mm >= cuda::kMaxGemvGroup)
      return false;
    if (!(fuse_.qkv || (fuse_.gateup && h.n_mm == 1))) return false;
    const Weight& w0 = h.mm[0].w;
    if (w.type != w0.type || w.ne0 != w0.ne0 || y == x) return false;
    for (int i = 0; i < h.n_mm; ++i) {
      if (h.mm[i].y == y) return false;
    }
    return true;
  }
  // The held-back GEMV(s) or gemm_small(s), adding the result into `resid` when given (a lone
  // matrix only).
  void launch_matmul(float* resid) {
    const Pending p = held_;
    held_.kind = Pending::Kind::None;
    const bool small = p.n_tokens > cuda::kGemvMaxTokens;
    if (p.n_mm > 1 && !fuse_.qkv) {
      // A gateup pair without its SwiGLU: separate launches.
      for (int i = 0; i < p.n_mm; ++i) {
        if (small) {
          cuda::gemm_small(stream_, decode_, &p.mm[i], 1, p.x, p.n_tokens, nullptr, n_sm_, exact_);
        } else {
          cuda::gemv(stream_, p.mm[i].y, p.mm[i].w, p.x, p.n_tokens, p.mm[i].bias, plain_fusion());
        }
      }
      return ran(small ? "gemm_small" : "gemv");
    }
    std::string kernel;
    if (small) {
      cuda::gemm_small(stream_, decode_, p.mm, p.n_mm, p.x, p.n_tokens, resid, n_sm_, exact_);
      kernel = "gemm_small";
    } else {
      cuda::GemvFusion f = plain_fusion();
      f.resid = resid;
      cuda::gemv_group(stream_, p.mm, p.n_mm, p.x, p.n_tokens, f);
      kernel = p.n_mm > 1 ? "gemv_group" : "gemv";
    }
    if (resid) {
      plant("resid", resid, p.mm[0].w.ne1);
      kernel += "[resid]";
    } else if (p.n_mm > 1) {
      plant("qkv", p.mm[0].y, p.mm[0].w.ne1);
      kernel += "[qkv]";
    }
    ran(kernel);
  }

  // ---- taps and the test fault (see the file comment) ----
  // Records that `kernel` ran the op last issued (or the fused ops held back) and hands the taps
  // that waited for it their data.
  void ran(std::string_view kernel) {
    last_kernel_ = kernel;
    if (taps_.empty()) return;
    std::vector<HeldTap> taps;
    taps.swap(taps_);
    for (const HeldTap& t : taps) deliver(t);
  }
  // Copies a tap's tensor to the host (everything issued before it has run) and calls its sink,
  // naming the kernel that ran last. Not flush(): the held-back op is not what wrote it.
  void deliver(const HeldTap& t) {
    std::vector<float> h(size_t(t.rows * t.cols));
    QWEN_CUDA_CHECK(
        cudaMemcpyAsync(h.data(), t.x, h.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    QWEN_CUDA_CHECK(cudaStreamSynchronize(stream_));
    t.sink(Tapped{t.name, t.layer, h.data(), t.rows, t.cols, last_kernel_});
  }
  // Whether the held-back op writes any of x[0..n).
  bool held_writes(const float* x, int64_t n) const {
    const Pending& h = held_;
    if (h.kind == Pending::Kind::Matmul) {
      for (int i = 0; i < h.n_mm; ++i) {
        if (overlaps(h.mm[i].y, int64_t(h.n_tokens) * h.mm[i].w.ne1, x, n)) return true;
      }
    } else if (h.kind == Pending::Kind::Rope) {
      for (int i = 0; i < h.n_rope; ++i) {
        if (overlaps(h.rope_x[i], int64_t(h.n_tokens) * h.rope_heads[i] * h.head_dim, x, n)) return true;
      }
    }
    return false;
  }
  // Whether a waiting tap reads any of y[0..n).
  bool tapped(const float* y, int64_t n) const {
    return std::any_of(taps_.begin(), taps_.end(),
                       [&](const HeldTap& t) { return overlaps(t.x, t.rows * t.cols, y, n); });
  }
  // Tap scratch of n floats in place of y[0..n): the waiting taps of y read it instead (their
  // offsets kept). Grown outside any capture (taps never run in one).
  float* stage_taps(const float* y, int64_t n) {
    if (tap_stage_floats_ < n) {
      if (tap_stage_) {
        QWEN_CUDA_CHECK(cudaStreamSynchronize(stream_));
        QWEN_CUDA_CHECK(cudaFree(tap_stage_));
        tap_stage_ = nullptr;
      }
      tap_stage_ = static_cast<float*>(alloc(size_t(n) * sizeof(float)));
      tap_stage_floats_ = n;
    }
    for (HeldTap& t : taps_) {
      if (overlaps(t.x, t.rows * t.cols, y, n)) t.x = tap_stage_ + (t.x - y);
    }
    return tap_stage_;
  }
  // The test hook: doubles token 0's row y[0..cols) of a launch of `fusion` when it is the one
  // CudaOptions::plant_fault names (add() allows out to alias its inputs).
  void plant(const char* fusion, float* y, int64_t cols) {
    if (fault_ == fusion) cuda::add(stream_, y, y, y, cols);
  }

  int device_;
  // The GEMMs of more than 4 tokens take x as hi + lo fp16 halves and attention is fp32
  // (make_cuda_backend); otherwise one fp16 pass and prefill attention on tensor cores.
  bool exact_;
  std::string name_;
  int n_sm_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  cuda::DecodeScratch decode_;
  cuda::GemmScratch scratch_;
  std::map<int, cudaGraphExec_t> graphs_;
  Pending held_;
  // Which fusions run, and the GEMV shapes deep and rows (CudaOptions::fusions).
  const CudaFusions fuse_;
  // CudaOptions::plant_fault ("" outside tests).
  const std::string fault_;
  int capturing_ = -1;
  // Taps of the held-back op's outputs, the kernel that ran last (for the taps), and the
  // scratch gateup stores a tapped gate into (stage_taps).
  std::vector<HeldTap> taps_;
  std::string last_kernel_ = "none";
  float* tap_stage_ = nullptr;
  int64_t tap_stage_floats_ = 0;
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

std::unique_ptr<Backend> make_cuda_backend(int device_index, const CudaOptions& options) {
  const int n = cuda_device_count();
  QWEN_CHECK(device_index >= 0 && device_index < n, "cuda device ", device_index, " does not exist (", n,
             " CUDA device(s) found)");
  return std::make_unique<CudaBackend>(device_index, options);
}

}  // namespace qwen
