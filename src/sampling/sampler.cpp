#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "util/check.h"

namespace qwen {

void apply_penalties(std::span<float> logits, std::span<const int32_t> history, const SamplerParams& p) {
  const bool any = p.repeat_penalty != 1.f || p.presence_penalty != 0.f || p.frequency_penalty != 0.f;
  if (!any || history.empty() || p.penalty_last_n == 0) return;
  const size_t n = p.penalty_last_n < 0 ? history.size() : std::min(history.size(), size_t(p.penalty_last_n));
  std::unordered_map<int32_t, int> count;
  for (int32_t id : history.subspan(history.size() - n)) ++count[id];
  for (const auto& [id, c] : count) {
    QWEN_CHECK(id >= 0 && size_t(id) < logits.size(), "sampler: history token ", id,
               " is outside the vocabulary of ", logits.size());
    float& l = logits[id];
    // llama.cpp / CTRL convention: shrink positive logits, grow negative ones.
    l = l > 0 ? l / p.repeat_penalty : l * p.repeat_penalty;
    l -= float(c) * p.frequency_penalty + p.presence_penalty;
  }
}

int32_t argmax(std::span<const float> logits) {
  QWEN_CHECK(!logits.empty(), "argmax of empty logits");
  return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

static bool by_logit(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}
static bool by_p(const Candidate& a, const Candidate& b) {
  return a.p > b.p || (a.p == b.p && a.id < b.id);
}

void top_k(std::span<const float> logits, int k, std::vector<Candidate>& out) {
  out.clear();
  if (k <= 0 || size_t(k) >= logits.size()) {
    out.resize(logits.size());
    for (size_t i = 0; i < logits.size(); ++i) out[i] = {int32_t(i), logits[i], 0.f};
    return;
  }
  // A heap ordered by by_logit keeps the worst of the k best at its front; a later token enters
  // only with a strictly larger logit (an equal one has a higher id, so it ranks lower).
  out.reserve(size_t(k));
  for (size_t i = 0; i < size_t(k); ++i) out.push_back({int32_t(i), logits[i], 0.f});
  std::make_heap(out.begin(), out.end(), by_logit);
  for (size_t i = size_t(k); i < logits.size(); ++i) {
    if (!(logits[i] > out.front().logit)) continue;
    std::pop_heap(out.begin(), out.end(), by_logit);
    out.back() = {int32_t(i), logits[i], 0.f};
    std::push_heap(out.begin(), out.end(), by_logit);
  }
  std::sort_heap(out.begin(), out.end(), by_logit);
}

void softmax(std::vector<Candidate>& c) {
  if (c.empty()) return;
  float mx = c[0].logit;
  for (const Candidate& x : c) mx = std::max(mx, x.logit);
  double sum = 0.0;
  for (Candidate& x : c) sum += x.p = std::exp(x.logit - mx);
  for (Candidate& x : c) x.p = float(x.p / sum);
}

static void renormalize(std::vector<Candidate>& c) {
  double sum = 0.0;
  for (const Candidate& x : c) sum += x.p;
  for (Candidate& x : c) x.p = float(x.p / sum);
}

void top_p(std::vector<Candidate>& c, float p) {
  if (p >= 1.f || c.empty()) return;
  // Sort only as far as needed: the sorted head grows 4x until it holds mass >= p.
  double cum = 0.0;
  size_t sorted = 0, head = std::min<size_t>(c.size(), 64);
  for (;;) {
    std::partial_sort(c.begin() + sorted, c.begin() + head, c.end(), by_p);
    for (; sorted < head; ++sorted) {
      cum += c[sorted].p;
      if (cum >= p) {
        c.resize(sorted + 1);
        renormalize(c);
        return;
      }
    }
    if (head == c.size()) return;  // rounding left the total just under p: keep everything
    head = std::min(c.size(), head * 4);
  }
}

void min_p(std::vector<Candidate>& c, float p) {
  if (p <= 0.f || c.empty()) return;
  float p_max = 0.f;
  for (const Candidate& x : c) p_max = std::max(p_max, x.p);
  const float threshold = p * p_max;  // the most likely candidate always survives (p < 1)
  std::erase_if(c, [&](const Candidate& x) { return x.p < threshold; });
  renormalize(c);
}

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {
  QWEN_CHECK(std::isfinite(params.temperature), "sampler: temperature ", params.temperature,
             " is not finite");
  QWEN_CHECK(params.top_p > 0.f, "sampler: top_p = ", params.top_p, " must be > 0");
  QWEN_CHECK(params.min_p < 1.f, "sampler: min_p = ", params.min_p, " must be < 1");
  QWEN_CHECK(params.repeat_penalty > 0.f, "sampler: repeat_penalty = ", params.repeat_penalty,
             " must be > 0");
}

void apply_logit_bias(std::span<float> logits, std::span<const std::pair<int32_t, float>> bias) {
  for (const auto& [id, b] : bias) {
    QWEN_CHECK(id >= 0 && size_t(id) < logits.size(), "logit_bias: token ", id, " is outside [0, ",
               logits.size(), ")");
    logits[size_t(id)] =
        b <= SamplerParams::kBan ? -std::numeric_limits<float>::infinity() : logits[size_t(id)] + b;
  }
}

TokenLogprobs token_logprobs(std::span<const float> logits, int32_t chosen, int n_top) {
  QWEN_CHECK(chosen >= 0 && size_t(chosen) < logits.size(), "token_logprobs: token ", chosen, " outside [0, ",
             logits.size(), ")");
  // log_softmax in double: log p_i = l_i - (m + log sum_j exp(l_j - m)).
  const float m = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(double(l) - double(m));
  const double lse = double(m) + std::log(sum);
  auto lp = [&](int32_t id) { return TokenLogprob{id, float(double(logits[size_t(id)]) - lse)}; };
  TokenLogprobs out{lp(chosen), {}};
  const size_t k = std::min(logits.size(), size_t(std::max(n_top, 0)));
  if (k > 0) {
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + ptrdiff_t(k), ids.end(), [&](int32_t a, int32_t b) {
      return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
    });
    for (size_t i = 0; i < k; ++i) out.top.push_back(lp(ids[i]));
  }
  return out;
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  apply_penalties(logits, history, params_);
  apply_logit_bias(logits, params_.logit_bias);
  if (params_.temperature <= 0.f) return argmax(logits);
  top_k(logits, params_.top_k, cand_);
  for (Candidate& x : cand_) x.logit /= params_.temperature;
  softmax(cand_);
  top_p(cand_, params_.top_p);
  min_p(cand_, params_.min_p);
  // Inverse-CDF draw with our own uniform so results do not depend on the standard library's
  // distribution implementation (std::mt19937_64 output itself is specified).
  const double u = double(rng_() >> 11) * (1.0 / 9007199254740992.0);
  double cum = 0.0;
  for (const Candidate& x : cand_) {
    cum += x.p;
    if (u < cum) return x.id;
  }
  // Rounding left the total mass just under u: the last candidate that can be drawn at all (one
  // with p = 0, a banned or grammar-masked token, must never come out).
  for (auto it = cand_.rbegin(); it != cand_.rend(); ++it) {
    if (it->p > 0.f) return it->id;
  }
  return cand_.back().id;
}

}  // namespace qwen
