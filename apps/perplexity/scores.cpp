#include "scores.h"

#include <algorithm>
#include <cmath>

#include "util/check.h"

namespace qwen::ppl {

void log_softmax(std::span<const float> logits, std::span<double> out) {
  QWEN_ASSERT(logits.size() == out.size() && !logits.empty());
  double max = logits[0];
  for (float x : logits) max = std::max(max, double(x));
  double sum = 0.0;
  for (float x : logits) sum += std::exp(double(x) - max);
  const double lse = max + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = double(logits[i]) - lse;
}

Mean mean_of(std::span<const double> xs) {
  Mean m;
  if (xs.empty()) return m;
  double sum = 0.0, sum2 = 0.0;
  for (double x : xs) sum += x, sum2 += x * x;
  const double n = double(xs.size());
  m.mean = sum / n;
  const double var = sum2 / n - m.mean * m.mean;
  if (xs.size() > 1 && var > 0) m.stderr_ = std::sqrt(var / (n - 1));
  return m;
}

double percentile(std::span<const double> sorted, double q) {
  QWEN_ASSERT(!sorted.empty());
  const double pos = q / 100.0 * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - double(lo)) * (sorted[hi] - sorted[lo]);
}

Perplexity perplexity(std::span<const double> nll) {
  const Mean m = mean_of(nll);
  Perplexity p;
  p.nll = m.mean;
  p.nll_stderr = m.stderr_;
  p.ppl = std::exp(m.mean);
  p.ppl_stderr = p.ppl * m.stderr_;
  p.n = int64_t(nll.size());
  return p;
}

void KlSample::add(std::span<const double> logp_base, std::span<const double> logp_q, int32_t target) {
  QWEN_ASSERT(logp_base.size() == logp_q.size() && target >= 0 && size_t(target) < logp_q.size());
  double k = 0.0;
  size_t top_base = 0, top_q = 0;
  for (size_t v = 0; v < logp_base.size(); ++v) {
    const double lp = logp_base[v], lq = logp_q[v];
    k += std::exp(lp) * (lp - lq);
    if (logp_base[v] > logp_base[top_base]) top_base = v;
    if (logp_q[v] > logp_q[top_q]) top_q = v;
  }
  kld.push_back(k);
  same_top += top_base == top_q;
  const size_t t = size_t(target);
  delta_p.push_back(std::exp(logp_q[t]) - std::exp(logp_base[t]));
  nll_q.push_back(-logp_q[t]);
  nll_base.push_back(-logp_base[t]);
}

KlSummary summarize(const KlSample& s) {
  QWEN_ASSERT(!s.kld.empty());
  KlSummary r;
  r.ppl_q = perplexity(s.nll_q);
  r.ppl_base = perplexity(s.nll_base);
  std::vector<double> ratio(s.nll_q.size());
  for (size_t i = 0; i < ratio.size(); ++i) ratio[i] = s.nll_q[i] - s.nll_base[i];
  r.ln_ppl_ratio = mean_of(ratio);
  r.kld = mean_of(s.kld);
  std::vector<double> sorted = s.kld;
  std::sort(sorted.begin(), sorted.end());
  for (double q : kKldPercentiles) r.kld_percentiles.push_back(percentile(sorted, q));
  const double n = double(s.kld.size());
  r.same_top.mean = double(s.same_top) / n;
  if (n > 1) r.same_top.stderr_ = std::sqrt(r.same_top.mean * (1.0 - r.same_top.mean) / (n - 1));
  sorted = s.delta_p;
  std::sort(sorted.begin(), sorted.end());
  double sum2 = 0.0;
  for (double d : sorted) sum2 += d * d;
  r.delta_p_rms = std::sqrt(sum2 / n);
  for (double q : kDeltaPPercentiles) r.delta_p_percentiles.push_back(percentile(sorted, q));
  return r;
}

}  // namespace qwen::ppl
