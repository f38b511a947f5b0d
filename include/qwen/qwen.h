// qwen.cu's public C++ API: load a GGUF model, tokenize and detokenize, render a chat, generate
// with sampling parameters and a streaming callback. Installed with the library
// (`find_package(qwen)` -> target qwen::qwen, or pkg-config `qwen`); examples/embed/ uses it.
//
// Only this header is installed, and it needs C++17 and the standard library only: the engine's
// internal headers stay private. Errors are thrown as std::runtime_error whose message names the
// file, key, tensor or option that is wrong.
//
// A Model is used from one thread at a time. Consecutive generate() calls reuse the longest
// common prefix of the previous prompt and output in the KV cache (a chat only pays for its new
// turn).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#define QWEN_API_VERSION_MAJOR 0
#define QWEN_API_VERSION_MINOR 1

namespace qwen::api {

struct LoadOptions {
  std::string model_path;       // a GGUF file
  std::string device = "auto";  // "auto" (cuda when a GPU is usable, else cpu), "cpu" or "cuda"
  int n_threads = 0;            // CPU threads; 0: all hardware threads
  int n_ctx = 0;                // context in tokens; 0: min(the model's, 4096)
  // true: the oracle arithmetic the tests use (CPU: every matmul in fp32 from the dequantized
  // weights; CUDA: prefill activations in two fp16 halves). false (the default): CPU matmuls of
  // quantized weights quantize activations to 8 bits, CUDA prefill rounds them to fp16 once;
  // several times (CPU) or about twice (CUDA prefill) faster.
  bool exact = false;
};

struct SamplingParams {
  float temperature = 0.8f;     // <= 0: greedy
  int top_k = 40;               // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  uint64_t seed = 0;
};

struct GenerateOptions {
  int max_tokens = 256;  // < 0: until end of generation or a full context
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (not included in the text)
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct Result {
  std::string text;             // the generated text
  std::vector<int32_t> tokens;  // the sampled tokens
  // "eog" (end-of-generation token), "stop" (a stop string), "length" (max_tokens),
  // "context_full" or "cancelled" (the callback returned false)
  std::string finish_reason;
  int n_prompt_tokens = 0;  // evaluated (the reused prefix excluded)
  double prompt_tokens_per_s = 0.0;
  double gen_tokens_per_s = 0.0;
};

// Receives each new piece of text (complete UTF-8) as it is generated; return false to stop.
using StreamCallback = std::function<bool(std::string_view piece)>;

class Model {
 public:
  static std::unique_ptr<Model> load(const LoadOptions& options);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Text to token ids; control tokens written in the text ("<|im_end|>") become their ids.
  // add_special: prepend BOS (append EOS) where the model asks for it, as generate(text) does.
  std::vector<int32_t> tokenize(std::string_view text, bool add_special = true) const;
  // Ids to text, control tokens included. Throws on an id outside the vocabulary.
  std::string detokenize(const std::vector<int32_t>& tokens) const;
  // The model's chat template applied to `messages`, ending with the assistant's turn opened.
  // It already holds any BOS the template writes: tokenize it with add_special = false.
  std::string chat_prompt(const std::vector<ChatMessage>& messages) const;

  Result generate(std::string_view prompt, const GenerateOptions& options,
                  const StreamCallback& on_text = {});
  Result generate(const std::vector<int32_t>& prompt_tokens, const GenerateOptions& options,
                  const StreamCallback& on_text = {});
  // The assistant's reply to a conversation (chat_prompt, then generate).
  Result chat(const std::vector<ChatMessage>& messages, const GenerateOptions& options,
              const StreamCallback& on_text = {});

  std::string backend_name() const;  // e.g. "cpu (2 threads, fast avx2)"
  int n_ctx() const;
  int n_vocab() const;

 private:
  Model();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qwen::api
