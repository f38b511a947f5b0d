#include "model/weights.h"

#include <cmath>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "util/check.h"

namespace qwen {

namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

// One tensor to upload: where it comes from and where it goes in the arena.
struct Planned {
  const gguf::TensorInfo* info;  // null: a table computed at load (host), not a file tensor
  bool to_f32;                   // vectors are converted to fp32
  bool in_place;                 // used where the file maps it: no arena bytes
  size_t offset;                 // in the arena
  size_t bytes;                  // in the arena
};

class Binder {
 public:
  // in_place: matrices stay in the file's mapping (a host backend reads them there).
  Binder(const gguf::File& f, bool in_place) : f_(f), in_place_(in_place) {}

  // A matrix [ne1][ne0] kept in its type. Returns the index of the planned tensor.
  size_t matrix(const std::string& name, int64_t ne0, int64_t ne1) {
    const gguf::TensorInfo& t = f_.tensor(name);
    QWEN_CHECK(t.n_dims == 2 && t.ne[0] == ne0 && t.ne[1] == ne1, f_.path(), ": tensor ", name, " has shape ",
               t.shape_str(), ", expected ", ne0, "x", ne1);
    const TypeTraits& tt = type_traits(t.type);
    QWEN_CHECK(tt.supported, f_.path(), ": tensor ", name, " has type ", tt.name,
               " which this build cannot compute with");
    QWEN_CHECK(ne0 % tt.block_size == 0, f_.path(), ": tensor ", name, " row length ", ne0,
               " is not a multiple of the ", tt.name, " block size ", tt.block_size);
    if (in_place_) {
      plan.push_back({&t, false, true, 0, 0});
      mapped += t.nbytes;
      return plan.size() - 1;
    }
    return add(t, false, t.nbytes);
  }

  // A vector [n] converted to fp32; nullopt-like SIZE_MAX when optional and absent.
  size_t vector(const std::string& name, int64_t n, bool required = true) {
    const gguf::TensorInfo* t = f_.find_tensor(name);
    if (t == nullptr) {
      QWEN_CHECK(!required, f_.path(), ": missing tensor ", name);
      return SIZE_MAX;
    }
    QWEN_CHECK(t->n_elements() == n && t->ne[0] == n, f_.path(), ": tensor ", name, " has shape ",
               t->shape_str(), ", expected ", n);
    QWEN_CHECK(type_traits(t->type).supported && type_traits(t->type).block_size <= n, f_.path(), ": tensor ",
               name, " has type ", type_name(t->type), " which cannot be read as fp32");
    return add(*t, true, size_t(n) * sizeof(float));
  }

  // An fp32 table of n values computed at load rather than read from the file.
  size_t computed(size_t n) {
    plan.push_back({nullptr, true, false, total, n * sizeof(float)});
    total += align_up(n * sizeof(float));
    return plan.size() - 1;
  }

  std::vector<Planned> plan;
  size_t total = 0;   // arena bytes
  size_t mapped = 0;  // bytes of the matrices used in place

 private:
  size_t add(const gguf::TensorInfo& t, bool to_f32, size_t bytes) {
    plan.push_back({&t, to_f32, false, total, bytes});
    total += align_up(bytes);
    return plan.size() - 1;
  }
  const gguf::File& f_;
  bool in_place_;
};

// The llama3 rope_freqs.weight tensor: per-pair divisors of the rope frequencies (llama.cpp's
// converter bakes HF's llama3 rope_scaling into it). Empty when the file has none.
std::vector<float> rope_freq_factors(const gguf::File& f, const ModelConfig& c) {
  const char* name = "rope_freqs.weight";
  const gguf::TensorInfo* t = f.find_tensor(name);
  if (t == nullptr) return {};
  const int64_t half = c.head_dim / 2;
  QWEN_CHECK(t->n_elements() == half && t->ne[0] == half, f.path(), ": tensor ", name, " has shape ",
             t->shape_str(), ", expected ", half, " (head dim / 2)");
  QWEN_CHECK(t->type == GGMLType::F32 || t->type == GGMLType::F16 || t->type == GGMLType::BF16, f.path(),
             ": tensor ", name, " has type ", type_name(t->type), ", expected F32, F16 or BF16");
  std::vector<float> factors(static_cast<size_t>(half));
  dequantize_row(t->type, t->data, factors.data(), half);
  for (int64_t i = 0; i < half; ++i) {
    QWEN_CHECK(std::isfinite(factors[size_t(i)]) && factors[size_t(i)] > 0.f, f.path(), ": tensor ", name,
               "[", i, "] = ", factors[size_t(i)], " must be a positive frequency divisor");
  }
  return factors;
}

}  // namespace

ModelWeights::ModelWeights(const gguf::File& f, const ModelConfig& c, Backend& backend,
                           const std::function<void(float)>& on_progress)
    : backend_(backend) {
  // The CPU backend computes on host memory, so its matrices are read straight from the mapping:
  // copying them would double the resident memory (the file's pages plus the copy) for nothing.
  // Only the fp32 vectors (converted from their file type) are copied.
  Binder b(f, backend.kind() == DeviceKind::CPU);
  // Indices into b.plan, resolved to pointers once the arena exists.
  struct LayerIdx {
    size_t attn_norm, q, k, v, qb, kb, vb, qn, kn, o, ffn_norm, gate, up, down;
  };
  const size_t embd = b.matrix("token_embd.weight", c.n_embd, c.n_vocab);
  const size_t out_norm = b.vector("output_norm.weight", c.n_embd);
  const size_t out = c.tied_output ? embd : b.matrix("output.weight", c.n_embd, c.n_vocab);
  std::vector<LayerIdx> li(c.n_layer);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerIdx& x = li[l];
    x.attn_norm = b.vector(p + "attn_norm.weight", c.n_embd);
    x.q = b.matrix(p + "attn_q.weight", c.n_embd, c.q_dim());
    x.k = b.matrix(p + "attn_k.weight", c.n_embd, c.kv_dim());
    x.v = b.matrix(p + "attn_v.weight", c.n_embd, c.kv_dim());
    // HF Qwen2 always has q/k/v biases; llama checkpoints may have them (attention_bias).
    const bool bias_required = c.arch == Arch::Qwen2;
    x.qb = b.vector(p + "attn_q.bias", c.q_dim(), bias_required);
    x.kb = b.vector(p + "attn_k.bias", c.kv_dim(), bias_required);
    x.vb = b.vector(p + "attn_v.bias", c.kv_dim(), bias_required);
    x.qn = c.qk_norm ? b.vector(p + "attn_q_norm.weight", c.head_dim) : SIZE_MAX;
    x.kn = c.qk_norm ? b.vector(p + "attn_k_norm.weight", c.head_dim) : SIZE_MAX;
    x.o = b.matrix(p + "attn_output.weight", c.q_dim(), c.n_embd);
    x.ffn_norm = b.vector(p + "ffn_norm.weight", c.n_embd);
    x.gate = b.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff);
    x.up = b.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff);
    x.down = b.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd);
  }
  const std::vector<float> inv_freq = rope_inv_freq(c, rope_freq_factors(f, c));
  const size_t rope_table = b.computed(inv_freq.size());

  arena_bytes_ = b.total;
  weight_bytes_ = b.total + b.mapped;
  arena_ = backend.alloc(arena_bytes_);
  auto* base = static_cast<uint8_t*>(arena_);
  size_t done = 0;
  std::vector<float> conv;
  for (const Planned& p : b.plan) {
    if (p.in_place) continue;
    if (p.info == nullptr) {
      backend.upload(base + p.offset, inv_freq.data(), p.bytes);
    } else if (p.to_f32) {
      conv.resize(p.bytes / sizeof(float));
      dequantize_row(p.info->type, p.info->data, conv.data(), int64_t(conv.size()));
      backend.upload(base + p.offset, conv.data(), p.bytes);
    } else {
      backend.upload(base + p.offset, p.info->data, p.bytes);
    }
    done += align_up(p.bytes);
    if (on_progress) on_progress(float(double(done) / double(arena_bytes_)));
  }

  auto vec = [&](size_t i) -> const float* {
    return i == SIZE_MAX ? nullptr : reinterpret_cast<const float*>(base + b.plan[i].offset);
  };
  auto mat = [&](size_t i) {
    const Planned& p = b.plan[i];
    const gguf::TensorInfo& t = *p.info;
    return Weight{t.type, t.ne[0], t.ne[1], p.in_place ? t.data : base + p.offset};
  };
  token_embd = mat(embd);
  output_norm = vec(out_norm);
  output = mat(out);
  rope = RopeParams{vec(rope_table), rope_mscale(c), c.rope_mode};
  layers.resize(c.n_layer);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerIdx& x = li[l];
    LayerWeights& w = layers[l];
    w.attn_norm = vec(x.attn_norm);
    w.attn_q = mat(x.q);
    w.attn_k = mat(x.k);
    w.attn_v = mat(x.v);
    w.attn_q_b = vec(x.qb);
    w.attn_k_b = vec(x.kb);
    w.attn_v_b = vec(x.vb);
    w.attn_q_norm = vec(x.qn);
    w.attn_k_norm = vec(x.kn);
    w.attn_output = mat(x.o);
    w.ffn_norm = vec(x.ffn_norm);
    w.ffn_gate = mat(x.gate);
    w.ffn_up = mat(x.up);
    w.ffn_down = mat(x.down);
  }
}

ModelWeights::~ModelWeights() {
  if (arena_ != nullptr) backend_.free(arena_);
}

}  // namespace qwen
