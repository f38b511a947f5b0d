// qwen-quantize: F32/F16/BF16 GGUF model -> quantized GGUF, with llama-quantize's type names and
// per-tensor rules (docs/QUANTIZE.md).
//   qwen-quantize IN.gguf OUT.gguf TYPE [--pure] [--nearest] [-t N]
//
// The input stays mmapped (each tensor's pages released once it is written) and the output is
// written tensor by tensor in row chunks of at most kChunkBytes, so allocated memory is one chunk
// plus one fp32 row per thread whatever the model size.
#include <sys/mman.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "util/thread_pool.h"
#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "gguf/quant_recipe.h"
#include "gguf/quantize.h"
#include "util/check.h"

namespace {

using qwen::GGMLType;
using qwen::gguf::File;
using qwen::gguf::TensorInfo;
using qwen::gguf::Value;
using qwen::gguf::ValueType;

constexpr size_t kChunkBytes = size_t(32) << 20;
constexpr uint32_t kQuantizationVersion = 2;  // general.quantization_version of ggml's current formats

struct Options {
  std::string in, out, type;
  bool pure = false;
  bool nearest = false;
  int threads = 0;
};

struct Planned {
  const TensorInfo* info;
  qwen::TensorPick pick;
  bool converted() const { return pick.type != info->type; }
};

bool is_float(GGMLType t) {
  return t == GGMLType::F32 || t == GGMLType::F16 || t == GGMLType::BF16;
}

qwen::ModelShape read_shape(const File& f, bool pure) {
  qwen::ModelShape s;
  s.has_output = f.find_tensor("output.weight") != nullptr;
  for (const TensorInfo& t : f.tensors())
    if (t.name.find("attn_v.weight") != std::string::npos ||
        t.name.find("attn_qkv.weight") != std::string::npos)
      ++s.n_attn_v;
  if (pure) return s;  // --pure applies no rule, so needs no model shape
  try {
    const auto arch = f.get<std::string>("general.architecture");
    s.n_layer = f.get<int>(arch + ".block_count");
    s.n_head = f.get<int>(arch + ".attention.head_count");
    s.n_head_kv = f.get_or<int>(arch + ".attention.head_count_kv", s.n_head);
  } catch (const qwen::Error& e) {
    throw qwen::Error(qwen::str(e.what(), " (the per-tensor rules need the model's shape; --pure does not)"));
  }
  return s;
}

std::vector<Planned> plan(const File& f, const qwen::QuantMix& mix, bool pure) {
  for (const TensorInfo& t : f.tensors())
    QWEN_CHECK(is_float(t.type), f.path(), ": tensor '", t.name, "' is ", qwen::type_name(t.type),
               "; qwen-quantize reads F32, F16 or BF16 models only (no requantizing)");
  const qwen::ModelShape shape = read_shape(f, pure);
  std::vector<Planned> out;
  for (const TensorInfo& t : f.tensors())
    out.push_back({&t, qwen::pick_type(mix, pure, shape, t.name, t.n_dims, t.ne[0], t.type)});
  return out;
}

Value u32(uint32_t v) {
  return {ValueType::UINT32, uint64_t(v)};
}

// Every key of the input in its order, general.file_type and general.quantization_version set.
void copy_metadata(const File& f, const qwen::QuantMix& mix, qwen::gguf::Writer& w) {
  bool have_ftype = false, have_qver = false;
  for (const auto& [key, value] : f.metadata()) {
    if (key == "general.file_type") {
      w.add_kv(key, u32(mix.file_type));
      have_ftype = true;
    } else if (key == "general.quantization_version") {
      w.add_kv(key, u32(kQuantizationVersion));
      have_qver = true;
    } else {
      w.add_kv(key, value);
    }
  }
  if (!have_qver) w.add_kv("general.quantization_version", u32(kQuantizationVersion));
  if (!have_ftype) w.add_kv("general.file_type", u32(mix.file_type));
}

// One line per tensor on stderr; on a terminal a single line redrawn as rows complete.
class Progress {
 public:
  explicit Progress(size_t n) : n_(n), tty_(isatty(STDERR_FILENO) == 1) {}
  void update(size_t i, const Planned& p, double fraction) {
    if (!tty_) return;
    std::fprintf(stderr, "\r\033[K[%4zu/%zu] %-36s %s -> %-5s %3.0f%%", i + 1, n_, p.info->name.c_str(),
                 qwen::type_name(p.info->type), qwen::type_name(p.pick.type), 100.0 * fraction);
    std::fflush(stderr);
  }
  void done(size_t i, const Planned& p, uint64_t out_bytes) {
    if (tty_) std::fprintf(stderr, "\r\033[K");
    if (!p.pick.fallback.empty())
      std::fprintf(stderr, "%s: fallback: %s\n", p.info->name.c_str(), p.pick.fallback.c_str());
    const char* end = tty_ && i + 1 < n_ ? "" : "\n";
    std::fprintf(stderr, "[%4zu/%zu] %-36s %-12s %5s -> %-5s %9.3f -> %9.3f MiB%s", i + 1, n_,
                 p.info->name.c_str(), p.info->shape_str().c_str(), qwen::type_name(p.info->type),
                 qwen::type_name(p.pick.type), double(p.info->nbytes) / (1 << 20),
                 double(out_bytes) / (1 << 20), end);
    std::fflush(stderr);
  }

 private:
  size_t n_;
  bool tty_;
};

// Converts one tensor row chunk by row chunk: each thread expands its rows to fp32 and quantizes them.
// A NaN or infinity is refused (it would poison its block's scale), naming the tensor and row.
void convert(const Planned& p, qwen::ScaleSearch search, qwen::ThreadPool& pool, qwen::gguf::Writer& w,
             const std::function<void(double)>& tick) {
  const TensorInfo& t = *p.info;
  const int64_t ne0 = t.ne[0];
  if (t.n_elements() == 0) return;
  const int64_t rows = t.n_elements() / ne0;
  const size_t in_row = qwen::row_bytes(t.type, ne0);
  const size_t out_row = qwen::row_bytes(p.pick.type, ne0);
  const int64_t chunk_rows = std::max<int64_t>(1, int64_t(kChunkBytes / out_row));
  const qwen::DequantizeRowFn to_f32 = qwen::dequantize_row_fn(t.type);
  std::vector<uint8_t> out(size_t(std::min(rows, chunk_rows)) * out_row);
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t nr = std::min(chunk_rows, rows - r0);
    pool.parallel_for(nr, [&](int64_t begin, int64_t end) {
      std::vector<float> buf(static_cast<size_t>(ne0));
      for (int64_t r = begin; r < end; ++r) {
        to_f32(t.data + (r0 + r) * in_row, buf.data(), ne0);
        for (int64_t i = 0; i < ne0; ++i)
          QWEN_CHECK(std::isfinite(buf[size_t(i)]), "tensor '", t.name, "' row ", r0 + r, " element ", i,
                     " is ", buf[size_t(i)], ": only finite weights can be quantized");
        qwen::quantize_row(p.pick.type, buf.data(), out.data() + r * out_row, ne0, search);
      }
    });
    w.write(out.data(), size_t(nr) * out_row);
    tick(double(r0 + nr) / double(rows));
  }
}

void copy_bytes(const TensorInfo& t, qwen::gguf::Writer& w) {
  for (uint64_t at = 0; at < t.nbytes; at += kChunkBytes)
    w.write(t.data + at, size_t(std::min<uint64_t>(kChunkBytes, t.nbytes - at)));
}

// Drops the input pages of a finished tensor from this process: they are clean file pages, so the
// resident set stays at about one tensor of input instead of growing to the whole model.
void release_input(const TensorInfo& t) {
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(t.data) + t.nbytes;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

int run(const Options& o) {
  const auto start = std::chrono::steady_clock::now();
  const qwen::QuantMix& mix = qwen::parse_mix(o.type);
  const auto f = File::open(o.in);
  const std::vector<Planned> tensors = plan(*f, mix, o.pure);

  qwen::gguf::Writer w(o.out, f->alignment());
  copy_metadata(*f, mix, w);
  for (const Planned& p : tensors) w.add_tensor(p.info->name, p.pick.type, p.info->n_dims, p.info->ne);
  w.begin();

  const int n_threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  qwen::ThreadPool pool(n_threads);
  Progress progress(tensors.size());
  uint64_t in_bytes = 0;
  int64_t n_elements = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Planned& p = tensors[i];
    const uint64_t before = w.data_written();
    progress.update(i, p, 0.0);
    if (p.converted())
      convert(p, o.nearest ? qwen::ScaleSearch::Nearest : qwen::default_search(p.pick.type), pool, w,
              [&](double fraction) { progress.update(i, p, fraction); });
    else
      copy_bytes(*p.info, w);
    release_input(*p.info);
    w.end_tensor();
    progress.done(i, p, w.data_written() - before);
    in_bytes += p.info->nbytes;
    n_elements += p.info->n_elements();
  }
  w.finish();

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr,
               "qwen-quantize: %s (%s%s%s): %zu tensors, %.2f MiB -> %.2f MiB (%.2f bits/weight), %d "
               "threads, %.1f s\n",
               o.out.c_str(), mix.name, o.pure ? ", pure" : "", o.nearest ? ", nearest" : "", tensors.size(),
               double(in_bytes) / (1 << 20), double(w.data_written()) / (1 << 20),
               8.0 * double(w.data_written()) / double(n_elements), n_threads, seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-quantize: quantize an F32/F16/BF16 GGUF model (llama-quantize type names and rules)"};
  Options o;
  app.add_option("input", o.in, "input GGUF (F32, F16 or BF16 tensors)")->required();
  app.add_option("output", o.out, "output GGUF")->required();
  app.add_option("type", o.type, "one of " + qwen::mix_names())->required();
  app.add_flag("--pure", o.pure, "every quantizable 2-D weight in TYPE (no per-tensor rules)");
  app.add_flag(
      "--nearest", o.nearest,
      "plain round-to-nearest scales, no search (Q8_0..Q5_1 then equal ggml's reference quantizers)");
  app.add_option("-t,--threads", o.threads, "worker threads (default: all cores)")
      ->check(CLI::Range(1, 4096));
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    // Ends a progress line left open on a terminal.
    std::fprintf(stderr, "%sqwen-quantize: error: %s\n", isatty(STDERR_FILENO) == 1 ? "\n" : "", e.what());
    return 1;
  }
}
