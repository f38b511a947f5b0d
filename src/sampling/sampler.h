// Token samplers: pure functions over a logits span plus a seeded RNG, so a run is reproducible
// from its seed. The chain order is HF transformers': penalties -> top-k -> temperature -> softmax
// -> top-p -> min-p -> draw. temperature <= 0 means greedy (argmax after penalties). Nothing sorts
// the whole vocabulary: top-k keeps a heap of k, top-p sorts only the head it keeps.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace qwen {

struct SamplerParams {
  float temperature = 0.8f;       // <= 0: greedy
  int top_k = 40;                 // <= 0: off
  float top_p = 0.95f;            // >= 1: off
  float min_p = 0.05f;            // <= 0: off
  float repeat_penalty = 1.0f;    // 1: off (llama.cpp: divides positive logits, multiplies negative)
  int penalty_last_n = 64;        // how many recent tokens the penalties look at; -1: all
  float presence_penalty = 0.f;   // subtracted once from every token seen
  float frequency_penalty = 0.f;  // subtracted per occurrence
  uint64_t seed = 0;
  // (token id, bias) added to the logit after the penalties (OpenAI's logit_bias); a bias of
  // kBan or less removes the token (the API documents -100 as a ban).
  std::vector<std::pair<int32_t, float>> logit_bias;
  static constexpr float kBan = -100.f;

  // True when sample() is exactly argmax(logits): greedy and nothing changes a logit.
  bool is_argmax() const {
    return temperature <= 0.f && repeat_penalty == 1.f && presence_penalty == 0.f &&
           frequency_penalty == 0.f && logit_bias.empty();
  }
};

// A candidate token with its logit and (after softmax) probability.
struct Candidate {
  int32_t id;
  float logit;
  float p;
};

// ---- the individual transforms (exposed for unit tests) ----
// Penalties over the last `last_n` tokens of history, applied to logits in place.
void apply_penalties(std::span<float> logits, std::span<const int32_t> history, const SamplerParams& p);
// Index of the largest logit (lowest index on ties).
int32_t argmax(std::span<const float> logits);
// The candidates of `logits` into `out`: with 0 < k < logits.size(), the k largest logits (ties:
// lower id first) sorted by logit descending, selected in one pass that keeps only k of them (a
// 152k vocabulary costs one comparison per token, not a candidate array to sort); otherwise every
// token, in id order.
void top_k(std::span<const float> logits, int k, std::vector<Candidate>& out);
// Sets p = softmax(logit) over the candidates; their order is unchanged.
void softmax(std::vector<Candidate>& c);
// Keeps the most likely candidates until their mass reaches top_p, sorted by p descending;
// renormalises.
void top_p(std::vector<Candidate>& c, float top_p);
// Drops candidates with p < min_p * p_max (keeping the order); renormalises.
void min_p(std::vector<Candidate>& c, float min_p);
// Adds each bias to its token's logit; a bias <= SamplerParams::kBan sets it to -infinity.
void apply_logit_bias(std::span<float> logits, std::span<const std::pair<int32_t, float>> bias);

// Log-probabilities under the model's own distribution, log_softmax(logits) of the raw logits
// (before penalties, bias and temperature), as the OpenAI API's `logprobs` report them.
struct TokenLogprob {
  int32_t id;
  float logprob;
};
struct TokenLogprobs {
  TokenLogprob chosen;            // the token that was sampled
  std::vector<TokenLogprob> top;  // the `n_top` most likely tokens, most likely first
};
TokenLogprobs token_logprobs(std::span<const float> logits, int32_t chosen, int n_top);

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params);
  const SamplerParams& params() const { return params_; }
  // Samples one token from logits [n_vocab] (modified in place by penalties); history is every
  // token of the sequence so far (prompt and generated), oldest first.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);
  void reseed(uint64_t seed) { rng_.seed(seed); }

 private:
  SamplerParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> cand_;  // reused between calls
};

}  // namespace qwen
