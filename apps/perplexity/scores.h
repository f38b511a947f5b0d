// The statistics qwen-perplexity reports, computed in double: perplexity with its standard error,
// and the KL divergence summary of one model's token distributions against a base model's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qwen::ppl {

// Natural-log probabilities of one row of logits (log-softmax in double).
void log_softmax(std::span<const float> logits, std::span<double> out);

// Mean and standard error of the mean of a sample (sqrt(variance / (n - 1)); 0 for n < 2).
struct Mean {
  double mean = 0.0, stderr_ = 0.0;
};
Mean mean_of(std::span<const double> xs);

// Percentile q in [0, 100] of `sorted` with linear interpolation between the two nearest ranks
// (numpy's default), so scripts can check the figures with np.percentile.
double percentile(std::span<const double> sorted, double q);

// Perplexity = exp(mean NLL); its standard error follows from that of the mean NLL by the delta
// method: d exp(m) = exp(m) dm.
struct Perplexity {
  double ppl = 0.0, ppl_stderr = 0.0, nll = 0.0, nll_stderr = 0.0;
  int64_t n = 0;
};
Perplexity perplexity(std::span<const double> nll);

// The percentiles reported for KL divergence and for Δp, highest first.
inline constexpr double kKldPercentiles[] = {100, 99.9, 99, 95, 90, 50, 10, 5, 1, 0};
inline constexpr double kDeltaPPercentiles[] = {100, 99.9, 99, 95, 90, 75, 50, 25, 10, 5, 1, 0.1, 0};

// Per scored token, base model P and the model under test Q:
//   kld      = sum_v P(v) (ln P(v) - ln Q(v))
//   same_top = argmax P == argmax Q
//   delta_p  = Q(target) - P(target), the change in the probability of the actual next token
struct KlSample {
  std::vector<double> kld, delta_p, nll_q, nll_base;
  int64_t same_top = 0;
  // Adds one position from the two log-probability rows and the token that followed.
  void add(std::span<const double> logp_base, std::span<const double> logp_q, int32_t target);
};

struct KlSummary {
  Perplexity ppl_q, ppl_base;
  Mean ln_ppl_ratio;  // mean of ln Q(target)^-1 - ln P(target)^-1 = ln(PPL(Q) / PPL(base))
  Mean kld;
  std::vector<double> kld_percentiles;  // at kKldPercentiles
  Mean same_top;                        // fraction of positions where the top tokens agree
  double delta_p_rms = 0.0;
  std::vector<double> delta_p_percentiles;  // at kDeltaPPercentiles
};
KlSummary summarize(const KlSample& s);

}  // namespace qwen::ppl
