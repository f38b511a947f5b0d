// Runtime: a loaded model with its KV cache slots (Engine), incremental generation on one slot
// (Generation), a batched step over several slots, and a one-slot convenience wrapper (Session).
//
// Ownership and threading: an Engine is used from one thread at a time. A server keeps one Engine
// with n_seq slots, gives each request a free slot, creates a Generation for it, and calls
// Engine::step() on all running generations together: one batched forward per step, so several
// sequences decode at once. Nothing here allocates backend memory after Engine::load().
//
// step() is pipelined: it launches the next forward before it turns the tokens it just read back
// into text, so the device computes step k+1 while the host streams step k's text. A step's
// forward is therefore still "in flight" between two step() calls; every other Engine call that
// needs the backend first finishes it ("drains": waits, reads back, and keeps the sampled tokens
// in their generations), and a Generation destroyed while in flight takes its input back out.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/ggml_types.h"
#include "sampling/sampler.h"

namespace qwen {

class Backend;
class Grammar;
class Model;
class Tokenizer;
struct ModelConfig;
struct Tapped;       // backend/backend.h
enum class Pooling;  // model/config.h

// What Engine::load does with a context longer than the positions the model is trained for
// (ModelConfig::n_ctx_max): refuse it with the numbers, or run with a warning on stderr.
enum class CtxOverflow { Refuse, Warn };

struct EngineOptions {
  std::string model_path;
  std::string device = "auto";  // auto | cpu | cuda
  int n_threads = 0;            // cpu backend threads; 0: all hardware threads
  // true: the oracle arithmetic (CPU: fp32 from dequantized weights; CUDA: prefill activations in
  // two fp16 halves); false: the fast paths (make_backend). The apps default to false, tests to true.
  bool exact = true;
  int n_ctx = 0;                // tokens per slot; 0: the model's trained context (n_ctx_max)
  int n_seq = 1;                // KV cache slots (sequences decoded together)
  int max_batch = 512;          // most tokens in one forward call (longer prompts are chunked)
  // n_ctx beyond the model's n_ctx_max: an error (Refuse) or a warning on stderr (Warn).
  CtxOverflow ctx_overflow = CtxOverflow::Refuse;
  // F32, F16, BF16 or Q8_0 (runtime/kv_cache.h); unset: F16 on the GPU (half the cache traffic;
  // attention still accumulates in fp32), F32 on the CPU (the oracle stays exact). The accuracy
  // each costs is in docs/ARCHITECTURE.md ("KV cache types").
  std::optional<GGMLType> kv_type;
  // On a backend with graphs, decode steps (one token per slot, up to n_seq slots) are captured
  // once per batch size and replayed; false runs every forward eagerly (for comparisons).
  bool use_graphs = true;
  // Called while loading with the fraction done in [0, 1] (for a progress bar).
  std::function<void(float)> on_progress;
};

// Wall-clock timing of one generation, in the units users read.
struct Timing {
  int n_prompt = 0;        // prompt tokens that went through the model (cached prefix excluded)
  int n_cached = 0;        // prompt tokens reused from the slot's KV cache
  int n_gen = 0;           // tokens sampled
  double prompt_ms = 0.0;  // prefill time up to the first sampled token's logits
  double gen_ms = 0.0;     // time of the decode steps after the first sampled token
  // Engine::step is pipelined, so each forward counts from its launch to its result on the host:
  // that includes the host work it overlapped (streaming the previous tokens) and the caller's
  // time between two steps, i.e. about the period at which a stream gets its tokens.
  double prompt_tok_s() const { return prompt_ms > 0 ? n_prompt * 1000.0 / prompt_ms : 0.0; }
  double gen_tok_s() const { return gen_ms > 0 && n_gen > 1 ? (n_gen - 1) * 1000.0 / gen_ms : 0.0; }
};

enum class FinishReason {
  Running,      // not finished yet
  Eog,          // sampled an end-of-generation token (eos, eot, <|im_end|>), not emitted
  Stop,         // produced a stop string (the text up to it is emitted, the stop string is not)
  Length,       // max_tokens reached
  ContextFull,  // the slot's n_ctx is full
  Cancelled,    // the text callback returned false
};
// "running", "eog", "stop", "length", "context_full", "cancelled"
const char* finish_reason_name(FinishReason r);

struct GenerateParams {
  int max_tokens = 256;  // < 0: until eog / stop / context full
  SamplerParams sampler;
  std::vector<std::string> stop;  // stop strings
  bool ignore_eog = false;        // keep going through end-of-generation tokens
  int logprobs = -1;              // >= 0: record each sampled token's logprob and this many top ones
  // Constrained decoding (sampling/grammar.h): every step samples only tokens that keep the text
  // a prefix of the grammar's language, and end-of-generation only once it is complete.
  std::shared_ptr<const Grammar> grammar;
};

// Receives each newly decoded piece of text (complete UTF-8, stop strings held back until they
// can no longer match). Return false to cancel the generation.
using OnText = std::function<bool(std::string_view piece)>;

struct Completion {
  std::string text;                     // everything emitted through OnText, concatenated
  std::vector<int32_t> tokens;          // sampled tokens (including a final eog token if sampled)
  std::vector<TokenLogprobs> logprobs;  // one per token when GenerateParams::logprobs >= 0
  FinishReason finish = FinishReason::Running;
  // Set when this generation failed on its own while others go on (its grammar left no token to
  // sample, e.g. a schema too ambiguous to follow); finish is then Cancelled.
  std::string error;
  Timing timing;
};

class Generation;

class Engine {
 public:
  // Opens the GGUF, builds backend, tokenizer, model and KV cache. Throws qwen::Error naming the
  // file and the bad key / tensor / option.
  static std::unique_ptr<Engine> load(const EngineOptions& opts);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelConfig& config() const;
  const Tokenizer& tokenizer() const;
  Backend& backend();
  Model& model();
  int n_ctx() const;
  int n_seq() const;
  int max_batch() const;
  int n_vocab() const;
  double load_ms() const;
  size_t kv_bytes() const;  // backend bytes of the KV cache (every slot, n_ctx positions each)
  GGMLType kv_type() const;  // its type: EngineOptions::kv_type or the backend's default

  // Tokens whose K/V currently sit in a slot (position i holds tokens[i]), counting the input of
  // a step still in flight (its K/V are being written). A slot whose generation ended (or was
  // destroyed after its first token) holds its prompt and every sampled token but the last.
  const std::vector<int32_t>& slot_tokens(int slot) const;
  // Forgets a slot's contents (its KV entries are simply overwritten later). Drains an in-flight
  // step first when it feeds this slot.
  void clear_slot(int slot);

  // Low-level batched evaluation: appends each input's tokens to its slot (at the slot's current
  // length) and writes the logits of each input's LAST token to logits[i * n_vocab ...]. Inputs
  // name distinct slots; long inputs are split over several forward calls of <= max_batch tokens.
  struct Input {
    int slot;
    std::span<const int32_t> tokens;
  };
  void eval(std::span<const Input> inputs, std::vector<float>& logits);
  // Before serving, on a backend with graphs: runs prefill forwards of 64, 128, ... max_batch
  // tokens (the first of a size grows scratch and loads kernels), then a decode step of every
  // size 1..min(n_seq, max_batch) twice, so that each size's graph is captured (a capture takes
  // milliseconds). All of it would otherwise fall on the first requests. Leaves every slot empty;
  // throws when one holds tokens. Returns the number of decode sizes warmed (0 without graphs).
  int warm_up();

  // Teacher-forced logits of every token (qwen-logits): evaluates `tokens` on `slot` from position
  // 0, `step_by_step` feeding one token per forward; out is [tokens.size()][n_vocab].
  // `tap` (optional) sees every named intermediate of every forward call (backend.h TapSink).
  using Tap = std::function<void(const Tapped&)>;
  void eval_all(std::span<const int32_t> tokens, bool step_by_step, std::vector<float>& out,
                const Tap& tap = {}, int slot = 0);

  // An embedder's vector of `tokens` (1..n_ctx of them): evaluates them on `slot` from position 0
  // (the slot then holds them; a step in flight is drained first) and pools the final hidden
  // states after output_norm as `pooling` says: Mean over all tokens, Cls (the first token's) or
  // Last. out: [n_embd], not normalised. The forward calls take as many tokens as max_batch
  // allows; the lm_head is not run.
  void embed(std::span<const int32_t> tokens, Pooling pooling, int slot, std::vector<float>& out);

  // One decode step for several running generations together: each generation that has sampled
  // feeds its last sampled token, and those still prefilling share `prompt_budget` prompt tokens
  // (0: max_batch), shortest prompt left first, each fed what is left of the budget. The budget is
  // also cut to what fits one forward call of max_batch tokens beside the decode tokens, but never
  // below one token. So the decode generations advance every step, a prompt of any length adds at
  // most one budget's worth of tokens to their forward (chunked prefill: the server's fairness
  // bound), and a short prompt is not held behind a long one. Once its prompt is in, a generation
  // samples, streams and checks stops. Finished generations are skipped. All generations must
  // use distinct slots.
  //
  // Pipelined, in three phases:
  //  1. collect: waits for the forward the previous step() launched (if any) and reads back its
  //     rows; each generation whose input ended there samples its next token (kept as "fresh":
  //     recorded in its result, text not yet produced). Generations in that forward but not in
  //     `gens` keep their fresh token until they are stepped again.
  //  2. launch: starts the next forward without waiting for it: each generation in `gens` feeds
  //     its fresh token (unless that token ends it: end-of-generation, max_tokens, context full)
  //     or its next prompt chunk.
  //  3. emit: turns each fresh token into text (stop strings, OnText, finish reasons), exactly
  //     as an unpipelined step would. A generation that ends here (stop string or cancelled)
  //     takes its input back out of the launched forward (its slot drops that token; the result
  //     row is ignored).
  // So a generation's first token comes out of the step() after the one that fed the end of its
  // prompt, one step later than its forward ran; tokens, text, finish reasons and the slot
  // contents of an ended generation are those of an unpipelined run. While a forward is in
  // flight, slot_tokens() of its slots already holds its inputs.
  void step(std::span<Generation* const> gens, int prompt_budget = 0);

 private:
  Engine();
  // eval() writing either all logits of each input's last token or only their argmax. With
  // `deferred` (step()'s launch), the last forward call is launched without waiting: its rows
  // stay on the backend for collect(), and *deferred receives the first input they belong to
  // (they are the inputs first, first + 1, ... in order).
  void run(std::span<const Input> inputs, float* logits, int32_t* top, size_t* deferred = nullptr);
  // Phase 1 of step(): finishes the forward in flight, if any (also called to drain it).
  void collect();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  friend class Generation;
};

// Incremental generation on one slot. The prompt is compared with what the slot already holds:
// the common prefix is reused, the rest is evaluated on the first step.
class Generation {
 public:
  // Throws qwen::Error when the prompt is empty or does not fit in n_ctx.
  Generation(Engine& engine, int slot, std::vector<int32_t> prompt, const GenerateParams& params,
             OnText on_text = {});
  // May run while a step's forward is in flight (a server drops a cancelled request at once): the
  // generation leaves it, and its slot drops the sampled token it was fed, so the slot holds the
  // prompt and every sampled token but the last, as when a generation ends (a prompt chunk in
  // flight stays in the slot).
  ~Generation();
  int slot() const { return slot_; }
  bool done() const { return result_.finish != FinishReason::Running; }
  // Between step() calls, tokens hold what step() streamed, except after another Engine call drained
  // a step in flight: then the token it sampled is already counted here, its text comes with the
  // next step() of this generation.
  const Completion& result() const { return result_; }

 private:
  friend class Engine;
  struct State;
  Engine& engine_;
  int slot_;
  Completion result_;
  std::unique_ptr<State> st_;
};

// One conversation slot: generate() runs a Generation to completion on it.
class Session {
 public:
  explicit Session(Engine& engine, int slot = 0) : engine_(engine), slot_(slot) {}
  Completion generate(std::vector<int32_t> prompt, const GenerateParams& params, const OnText& on_text = {});
  Completion generate(std::string_view prompt_text, const GenerateParams& params,
                      const OnText& on_text = {});  // tokenized with special tokens parsed
  void reset() { engine_.clear_slot(slot_); }
  Engine& engine() { return engine_; }
  int slot() const { return slot_; }

 private:
  Engine& engine_;
  int slot_;
};

}  // namespace qwen
