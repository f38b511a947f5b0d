// qwen-opbench's host side (apps/opbench/opbench.h): the matmul shapes against the model sizes of
// the issue, the flags and their errors, the random weight generator through the CPU dequantizer,
// the report's arithmetic, and the "no CUDA device" refusal. The timing itself needs a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../../apps/opbench/opbench.h"
#include "gguf/ggml_types.h"

namespace {

using opbench::Matrix;
using qwen::GGMLType;

std::vector<std::string> describe(const std::vector<Matrix>& ms) {
  std::vector<std::string> out;
  for (const Matrix& m : ms) out.push_back(qwen::str(m.shape, " ", m.names, " ", m.ne1, "x", m.ne0));
  return out;
}

const opbench::ModelShape& shape(const std::string& name) {
  for (const auto& s : opbench::model_shapes())
    if (name == s.name) return s;
  throw std::runtime_error("no shape " + name);
}

// Exact: ne1 x ne0 of q, k, v, o, gate, up, down, lm_head from the Qwen2.5 configs (hidden, heads x
// head_dim, FFN, vocab), equal shapes merged.
TEST(Opbench, MatricesOfEachModelShape) {
  EXPECT_EQ(describe(opbench::matrices(shape("0.5b"))),
            (std::vector<std::string>{"0.5b q/o 896x896", "0.5b k/v 128x896", "0.5b gate/up 4864x896",
                                      "0.5b down 896x4864", "0.5b lm_head 151936x896"}));
  EXPECT_EQ(describe(opbench::matrices(shape("7b"))),
            (std::vector<std::string>{"7b q/o 3584x3584", "7b k/v 512x3584", "7b gate/up 18944x3584",
                                      "7b down 3584x18944", "7b lm_head 152064x3584"}));
  EXPECT_EQ(describe(opbench::matrices(shape("14b"))),
            (std::vector<std::string>{"14b q/o 5120x5120", "14b k/v 1024x5120", "14b gate/up 13824x5120",
                                      "14b down 5120x13824", "14b lm_head 152064x5120"}));
  EXPECT_EQ(describe(opbench::matrices(shape("32b"))),
            (std::vector<std::string>{"32b q/o 5120x5120", "32b k/v 1024x5120", "32b gate/up 27648x5120",
                                      "32b down 5120x27648", "32b lm_head 152064x5120"}));
}

opbench::Options parse(const std::string& args) {
  CLI::App app;
  opbench::Options o;
  opbench::add_flags(app, o);
  app.parse(args, false);
  return o;
}

// Exact counts: 4 shapes x 5 matrices x 12 types, less the 0.5B matrices of 896-wide rows (q/o,
// k/v, gate/up, lm_head) in the five K types (blocks of 256); down (4864 = 19 x 256) keeps them.
TEST(Opbench, DefaultPlanSkipsTypesWhoseBlockDoesNotDivideTheRow) {
  const opbench::Plan p = opbench::make_plan(parse(""));
  EXPECT_EQ(p.n_tokens, (std::vector<int>{1, 8, 64, 512}));
  EXPECT_EQ(p.cases.size(), 4u * 5 * 12 - 4 * 5);
  ASSERT_EQ(p.skipped.size(), 4u * 5);
  for (const opbench::Skip& s : p.skipped) {
    EXPECT_EQ(s.m.shape, "0.5b");
    EXPECT_EQ(s.m.ne0, 896);
    EXPECT_EQ(qwen::type_traits(s.type).block_size, 256);
  }
  const std::vector<std::string> lines = opbench::skip_lines(p.skipped);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(
      lines[0],
      "skipped 0.5b q/o (896 x 896): ne0 = 896 is no multiple of the block size of Q2_K (256), Q3_K (256), "
      "Q4_K (256), Q5_K (256), Q6_K (256)");
}

// Exact: every flag reaches the options and the plan keeps the order given.
TEST(Opbench, FlagsChooseSubsets) {
  const opbench::Options o =
      parse("--shape 7B,0.5b --type q4_k,F16 -n 64,1 --reps 3 --peak-gbs 4800 --peak-tflops 989 --json");
  EXPECT_EQ(o.reps, 3);
  EXPECT_EQ(o.peak_gbs, 4800);
  EXPECT_EQ(o.peak_tflops, 989);
  EXPECT_TRUE(o.json);
  const opbench::Plan p = opbench::make_plan(o);
  EXPECT_EQ(p.n_tokens, (std::vector<int>{64, 1}));
  ASSERT_EQ(p.cases.size(), 5u * 2 + 5 + 1);  // 7b: 5 x 2 types; 0.5b: F16 everywhere, Q4_K for down only
  EXPECT_EQ(p.cases[0].m.shape, "7b");
  EXPECT_EQ(p.cases[0].type, GGMLType::Q4_K);
  EXPECT_EQ(p.cases[1].type, GGMLType::F16);
  EXPECT_EQ(p.skipped.size(), 4u);
}

// Each bad value is refused with an error naming the flag and the value.
TEST(Opbench, BadFlagsAreRefusedByName) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--shape 3b", "--shape '3b': unknown"},
      {"--shape 7b,7b", "--shape '7b' given twice"},
      {"--type Q9_9", "--type 'Q9_9'"},
      {"--type F32", "--type 'F32': not a benchmarked weight type"},
      {"--type Q8_1", "--type 'Q8_1': not a benchmarked weight type"},
      {"--type q8_0,Q8_0", "--type 'Q8_0' given twice"},
      {"-n 0", "-n 0: token counts must be 1..8192"},
      {"-n 8193", "-n 8193: token counts must be 1..8192"},
      {"-n 8,8", "-n 8 given twice"},
  };
  for (const auto& [args, want] : cases) {
    try {
      opbench::make_plan(parse(args));
      ADD_FAILURE() << args << ": accepted";
    } catch (const qwen::Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << args << ": " << e.what();
    }
  }
  for (const std::string args : {"-n x", "--reps 0", "--peak-gbs 0", "--peak-tflops -1", "--bogus"}) {
    EXPECT_THROW(parse(args), CLI::ParseError) << args;
  }
}

// Metric: every dequantized element (the repo's CPU dequantize_row) is finite and within the
// bound the generator's comment derives (|v| < 32; F16/BF16 exactly in ±[1/16, 1/8)), over 64
// rows of 512, enough blocks that a scale written at the wrong offset would leave a random fp16
// (Inf, NaN or up to 65504) somewhere. The values must also vary (std > 1e-3), and the bytes depend
// on the seed alone.
TEST(Opbench, RandomWeightsDequantizeToBoundedFiniteValues) {
  constexpr int64_t kRows = 64, kCols = 512;
  for (GGMLType t : opbench::bench_types()) {
    SCOPED_TRACE(qwen::type_name(t));
    const std::vector<uint8_t> w = opbench::random_weight(t, kRows, kCols, 7);
    ASSERT_EQ(w.size(), qwen::row_bytes(t, kCols) * kRows);
    EXPECT_EQ(w, opbench::random_weight(t, kRows, kCols, 7));
    EXPECT_NE(w, opbench::random_weight(t, kRows, kCols, 8));
    std::vector<float> v(size_t(kRows * kCols));
    for (int64_t r = 0; r < kRows; ++r)
      qwen::dequantize_row(t, w.data() + r * qwen::row_bytes(t, kCols), v.data() + r * kCols, kCols);
    double sum = 0, sum2 = 0;
    float lo = INFINITY, hi = 0;
    for (float x : v) {
      ASSERT_TRUE(std::isfinite(x));
      lo = std::min(lo, std::fabs(x));
      hi = std::max(hi, std::fabs(x));
      sum += x, sum2 += double(x) * x;
    }
    const double mean = sum / double(v.size());
    EXPECT_GT(std::sqrt(sum2 / double(v.size()) - mean * mean), 1e-3);
    if (t == GGMLType::F16 || t == GGMLType::BF16) {
      EXPECT_GE(lo, 1.f / 16);
      EXPECT_LT(hi, 1.f / 8);
    } else {
      EXPECT_LT(hi, 32.f);
    }
  }
  EXPECT_THROW(opbench::random_weight(GGMLType::Q4_K, 1, 896, 1), qwen::Error);
}

// Exact arithmetic of one row: 7B q/o in Q8_0 (3584 rows of 112 blocks of 34 bytes), one token,
// 10 µs: bytes 13,647,872 + 4 * (3584 + 3584) = 13,676,544 -> 1367.65 GB/s (44.8% of 3050);
// 2 * 3584^2 = 25,690,112 flops -> 2.57 TFLOP/s (0.3% of 800).
TEST(Opbench, ReportArithmetic) {
  const opbench::Result r{opbench::matrices(shape("7b"))[0], GGMLType::Q8_0, 1, 10e-6};
  const opbench::Limits l{3050, 800};
  EXPECT_EQ(opbench::bytes_moved(r), 13676544.0);
  EXPECT_EQ(opbench::flops(r), 25690112.0);
  EXPECT_EQ(opbench::markdown_row(r, l),
            "| 7b | q/o | 3584 x 3584 | Q8_0 | 1 | 10.00 | 1368 | 44.8 | 2.57 | 0.3 |\n");
  const nlohmann::json j = opbench::json_row(r, l);
  EXPECT_EQ(j["matrix"], "q/o");
  EXPECT_EQ(j["type"], "Q8_0");
  EXPECT_EQ(j["n_tokens"], 1);
  EXPECT_NEAR(j["gbs"].get<double>(), 1367.6544, 1e-9);
  EXPECT_NEAR(j["gbs_pct"].get<double>(), 1367.6544 / 30.5, 1e-9);
  EXPECT_NEAR(j["tflops"].get<double>(), 2.5690112, 1e-12);
  EXPECT_NEAR(j["tflops_pct"].get<double>(), 2.5690112 / 8, 1e-12);
}

// Exact: without a usable GPU the benchmark refuses with "no CUDA device"; with one it reads the L2.
TEST(Opbench, NoCudaDeviceIsAClearError) {
  if (qwen::cuda_available()) {
    EXPECT_GT(opbench::cuda_l2_bytes(), 0u);
    return;
  }
  try {
    opbench::cuda_l2_bytes();
    ADD_FAILURE() << "no error without a GPU";
  } catch (const qwen::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
  }
}

}  // namespace
