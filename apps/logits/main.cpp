// qwen-logits: teacher-forced logits of every position as float32 .npy [n_tokens][n_vocab], and
// optionally every named intermediate (--dump DIR) for layer-by-layer comparison.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "backend/backend.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "runtime/kv_cache.h"
#include "runtime/session.h"
#include "runtime/tap_trace.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace {

// Writes a little-endian float32 C-order .npy (format version 1.0).
void write_npy(const std::string& path, const float* data, int64_t rows, int64_t cols) {
  std::string header =
      qwen::str("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows, ", ", cols, "), }");
  const size_t unpadded = 10 + header.size() + 1;  // magic(6) + version(2) + len(2) + header + '\n'
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  QWEN_CHECK(f.good(), "cannot open ", path, " for writing");
  const uint16_t len = uint16_t(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(data), std::streamsize(rows * cols * sizeof(float)));
  QWEN_CHECK(f.good(), "writing ", path, " failed");
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const long v = std::stol(item, &used);
      QWEN_CHECK(used == item.size(), "");
      ids.push_back(int32_t(v));
    } catch (const std::exception&) {
      QWEN_FAIL("--tokens: '", item, "' is not an integer token id");
    }
  }
  return ids;
}

// The ids of a --tokens-file as parse_ids' comma-separated text (whitespace counts as a comma).
std::string read_ids_file(const std::string& path) {
  std::ifstream f(path);
  QWEN_CHECK(f.good(), "--tokens-file: cannot open ", path);
  std::string text, item;
  while (f >> item) {
    std::stringstream ss(item);
    std::string id;
    while (std::getline(ss, id, ',')) {
      if (id.empty()) continue;
      if (!text.empty()) text += ',';
      text += id;
    }
  }
  QWEN_CHECK(!text.empty(), "--tokens-file: ", path, " holds no token ids");
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-logits: teacher-forced logits of every position as float32 .npy [n_tokens][n_vocab]"};
  qwen::EngineOptions opts;
  std::string prompt, tokens_text, out_path, dump_dir;
  bool step = false;
  app.add_option("-m,--model", opts.model_path, "GGUF model file")->required();
  auto* p_opt =
      app.add_option("-p,--prompt", prompt, "prompt text (special tokens like <|im_start|> are parsed)");
  auto* t_opt = app.add_option("--tokens", tokens_text, "comma-separated token ids, e.g. 1,2,3");
  // One argv string holds at most 128 KiB on Linux: about 20,000 ids. Long inputs come from a file.
  std::string tokens_file;
  auto* f_opt =
      app.add_option("--tokens-file", tokens_file, "file of token ids separated by commas or whitespace")
          ->check(CLI::ExistingFile);
  p_opt->excludes(t_opt);
  p_opt->excludes(f_opt);
  t_opt->excludes(f_opt);
  app.add_option("-o,--out", out_path, "output .npy file")->required();
  app.add_option("--device", opts.device, "auto, cpu or cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("-t,--threads", opts.n_threads, "CPU threads (0: all)");
  bool fast = false;
  app.add_flag("--fast", fast,
               "the apps' default arithmetic instead of the exact oracle (CPU: 8-bit activations; CUDA: one "
               "fp16 pass of activations in prefill)");
  app.add_option("-b,--batch", opts.max_batch, "most tokens per forward call");
  app.add_option("--dump", dump_dir,
                 "write every named intermediate as DIR/L03.attn_norm.npy ..., and DIR/kernels.tsv: the "
                 "kernel that wrote each (CUDA: the fused kernel as it runs)");
  app.add_flag("--step", step, "feed one token per forward call through the KV cache");
  std::string kv_type = "auto";
  app.add_option("--kv-type", kv_type,
                 "KV cache type: auto (f16 on cuda, f32 on cpu), f32, f16, bf16 or q8_0");
  bool no_graphs = false;
  app.add_flag("--no-graphs", no_graphs, "run every forward eagerly (no captured graph replay)");
  CLI11_PARSE(app, argc, argv);
  try {
    QWEN_CHECK(!prompt.empty() || !tokens_text.empty() || !tokens_file.empty(),
               "give --prompt TEXT, --tokens 1,2,3 or --tokens-file PATH");
    if (!tokens_file.empty()) tokens_text = read_ids_file(tokens_file);
    opts.use_graphs = !no_graphs;
    opts.exact = !fast;
    opts.kv_type = qwen::kv_type_from_flags(kv_type, "", "");
    // Tokenize first so the KV cache is exactly as long as the input.
    std::vector<int32_t> ids;
    if (!tokens_text.empty()) ids = parse_ids(tokens_text);
    if (!prompt.empty()) {
      auto file = qwen::gguf::File::open(opts.model_path);
      ids = qwen::Tokenizer(*file).encode(prompt, /*parse_special=*/true, /*add_special=*/true);
    }
    QWEN_CHECK(!ids.empty(), "the input has no tokens");
    opts.n_ctx = int(ids.size());
    auto engine = qwen::Engine::load(opts);
    std::vector<float> logits;
    // Every named intermediate over all forward calls, and the kernel that wrote it (kernels.tsv:
    // on CUDA the fused kernel that ran, e.g. "gemv_group[qkv]").
    qwen::TapTrace dump;
    qwen::Engine::Tap tap;
    if (!dump_dir.empty()) {
      std::filesystem::create_directories(dump_dir);
      tap = [&dump](const qwen::Tapped& t) { dump.add(t); };
    }
    engine->eval_all(ids, step, logits, tap);
    const int64_t n_vocab = engine->n_vocab();
    write_npy(out_path, logits.data(), int64_t(ids.size()), n_vocab);
    if (!dump_dir.empty()) {
      std::ofstream kernels(dump_dir + "/kernels.tsv");
      for (const qwen::TapTensor& t : dump.tensors) {
        write_npy(dump_dir + "/" + t.key + ".npy", t.data.data(), int64_t(t.data.size()) / t.cols, t.cols);
        kernels << t.key << '\t' << t.kernel << '\n';
      }
      QWEN_CHECK(kernels.good(), "writing ", dump_dir, "/kernels.tsv failed");
    }
    std::cerr << "qwen-logits: " << ids.size() << " tokens x " << n_vocab << " logits on "
              << engine->backend().name() << " -> " << out_path << "\n";
  } catch (const std::exception& e) {
    std::cerr << "qwen-logits: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
