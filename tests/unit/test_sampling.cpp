// Sampler transforms: each checked on hand-computed small cases (exact ids, probabilities to 1e-6),
// plus seed reproducibility and empirical frequencies of a temperature draw.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "sampling/sampler.h"

namespace qwen {
namespace {

std::vector<Candidate> cands(const std::vector<float>& logits) {
  std::vector<Candidate> c;
  for (size_t i = 0; i < logits.size(); ++i) c.push_back({int32_t(i), logits[i], 0.f});
  return c;
}

TEST(Sampling, ArgmaxPicksLowestIndexOnTies) {
  std::vector<float> l = {1.f, 3.f, 3.f, -2.f};
  EXPECT_EQ(argmax(l), 1);
}

TEST(Sampling, TopKKeepsLargestSorted) {
  const std::vector<float> l = {0.1f, 2.f, -1.f, 5.f, 2.f};
  std::vector<Candidate> c;
  top_k(l, 3, c);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].id, 3);
  EXPECT_EQ(c[1].id, 1);  // tie 2.f: lower id first
  EXPECT_EQ(c[2].id, 4);
  top_k(l, 0, c);  // off: every token in id order
  ASSERT_EQ(c.size(), l.size());
  for (size_t i = 0; i < l.size(); ++i) EXPECT_EQ(c[i].id, int32_t(i));
}

// The one-pass selection against a full sort by (logit desc, id asc) on a Qwen-sized vocabulary
// whose logits take only 64 values (ties everywhere) plus banned tokens (-inf): ids and order
// must match exactly for every k.
TEST(Sampling, TopKEqualsFullSortWithTies) {
  std::mt19937 rng(11);
  std::vector<float> l(151936);
  for (float& x : l) x = float(int(rng() % 64)) * 0.25f - 8.f;
  for (int i = 0; i < 1000; ++i) l[rng() % l.size()] = -INFINITY;
  std::vector<Candidate> ref = cands(l);
  std::sort(ref.begin(), ref.end(), [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  });
  std::vector<Candidate> c;
  for (int k : {1, 2, 40, 1000, 151935}) {
    top_k(l, k, c);
    ASSERT_EQ(c.size(), size_t(k));
    for (int i = 0; i < k; ++i) ASSERT_EQ(c[i].id, ref[i].id) << "k " << k << ", rank " << i;
  }
}

TEST(Sampling, SoftmaxMatchesClosedForm) {
  auto c = cands({0.f, std::log(3.f)});
  softmax(c);
  EXPECT_EQ(c[0].id, 0);  // order unchanged
  EXPECT_NEAR(c[0].p, 0.25f, 1e-6);
  EXPECT_NEAR(c[1].p, 0.75f, 1e-6);
}

TEST(Sampling, TopPKeepsSmallestPrefixReachingMass) {
  auto c = cands({std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)});
  softmax(c);
  top_p(c, 0.7f);  // 0.5 falls short of 0.7, 0.5 + 0.3 reaches it
  ASSERT_EQ(c.size(), 2u);
  EXPECT_NEAR(c[0].p, 0.625f, 1e-6);
  EXPECT_NEAR(c[1].p, 0.375f, 1e-6);
}

// The sorted head grows in steps of 64, 256, ...: a flat distribution over 1000 tokens needs
// 900 of them for top-p 0.9, which crosses several steps.
TEST(Sampling, TopPOnLargeFlatDistribution) {
  std::vector<float> logits(1000, 0.f);
  logits[500] = 1.f;
  auto c = cands(logits);
  softmax(c);
  const double p_big = c[500].p;
  top_p(c, 0.9f);
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(c[0].id, 500);
  const size_t want = 1 + size_t(std::ceil((0.9 - p_big) / ((1 - p_big) / 999) - 1e-9));
  EXPECT_NEAR(double(c.size()), double(want), 1.0);
  for (size_t i = 2; i < c.size(); ++i) EXPECT_LT(c[i - 1].id, c[i].id);  // ties by id
}

TEST(Sampling, MinPDropsBelowFractionOfMax) {
  auto c = cands({std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)});
  softmax(c);
  min_p(c, 0.35f);  // threshold 0.175: keeps 0.5 and 0.3
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[1].id, 1);
  EXPECT_NEAR(c[0].p + c[1].p, 1.f, 1e-6);
}

TEST(Sampling, RepeatPenaltyDividesPositiveMultipliesNegative) {
  std::vector<float> l = {2.f, -2.f, 1.f};
  std::vector<int32_t> hist = {0, 1, 0};
  SamplerParams p;
  p.repeat_penalty = 2.f;
  apply_penalties(l, hist, p);
  EXPECT_FLOAT_EQ(l[0], 1.f);
  EXPECT_FLOAT_EQ(l[1], -4.f);
  EXPECT_FLOAT_EQ(l[2], 1.f);
}

TEST(Sampling, PresenceAndFrequencyPenalties) {
  std::vector<float> l = {2.f, 2.f, 2.f};
  std::vector<int32_t> hist = {0, 1, 0};
  SamplerParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  apply_penalties(l, hist, p);
  EXPECT_FLOAT_EQ(l[0], 2.f - 0.5f - 2 * 0.25f);
  EXPECT_FLOAT_EQ(l[1], 2.f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(l[2], 2.f);
}

TEST(Sampling, PenaltyLastNLimitsWindow) {
  std::vector<float> l = {2.f, 2.f};
  std::vector<int32_t> hist = {0, 1};
  SamplerParams p;
  p.repeat_penalty = 2.f;
  p.penalty_last_n = 1;
  apply_penalties(l, hist, p);
  EXPECT_FLOAT_EQ(l[0], 2.f);
  EXPECT_FLOAT_EQ(l[1], 1.f);
}

TEST(Sampling, GreedyWhenTemperatureZero) {
  SamplerParams p;
  p.temperature = 0.f;
  Sampler s(p);
  std::vector<float> l = {0.f, 1.f, 0.5f};
  EXPECT_EQ(s.sample(l, {}), 1);
}

// Plain softmax sampling at temperature t: every truncation (top-k, top-p, min-p) off.
SamplerParams untruncated(float t, uint64_t seed) {
  SamplerParams p;
  p.temperature = t;
  p.top_k = 0;
  p.top_p = 1.f;
  p.min_p = 0.f;
  p.seed = seed;
  return p;
}

TEST(Sampling, SameSeedSameSequence) {
  SamplerParams p = untruncated(1.f, 42);
  std::vector<float> base(100);
  for (size_t i = 0; i < base.size(); ++i) base[i] = std::sin(float(i));
  auto run = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) {
      std::vector<float> l = base;
      out.push_back(s.sample(l, out));
    }
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

// Empirical frequencies of 20000 draws vs softmax probabilities: |freq - p| <= 0.015 (> 4 sigma).
TEST(Sampling, DrawFollowsTemperatureSoftmax) {
  Sampler s(untruncated(2.f, 7));
  const std::vector<float> base = {0.f, 1.f, 2.f};
  std::map<int32_t, int> n;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) {
    std::vector<float> l = base;
    ++n[s.sample(l, {})];
  }
  double z = 0;
  for (float x : base) z += std::exp(x / 2.0);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(n[i] / double(draws), std::exp(base[i] / 2.0) / z, 0.015);
}

TEST(Sampling, TopKOneIsGreedy) {
  SamplerParams p;
  p.temperature = 1.5f;
  p.top_k = 1;
  Sampler s(p);
  for (int i = 0; i < 20; ++i) {
    std::vector<float> l = {0.3f, 0.1f, 0.29f};
    EXPECT_EQ(s.sample(l, {}), 0);
  }
}

}  // namespace
}  // namespace qwen
