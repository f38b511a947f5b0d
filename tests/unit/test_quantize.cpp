// Quantizers (round trip through the dequantizers), llama-quantize's per-tensor rules, and the
// GGUF writer (read back by the GGUF reader). Bit-exactness against gguf.quants.quantize and the
// whole tool are checked in tests/python/test_quantize.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"
#include "gguf/quant_recipe.h"
#include "gguf/quantize.h"
#include "util/check.h"

namespace {

using qwen::GGMLType;
using qwen::ScaleSearch;

std::vector<float> normal_values(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> x(n);
  for (float& v : x) v = nd(rng);
  return x;
}

// Relative RMS error of quantize -> dequantize: sqrt(sum (x - y)^2 / sum x^2).
double relative_rms(GGMLType t, const std::vector<float>& x, ScaleSearch search) {
  std::vector<uint8_t> q(qwen::row_bytes(t, int64_t(x.size())));
  qwen::quantize_row(t, x.data(), q.data(), int64_t(x.size()), search);
  std::vector<float> y(x.size());
  qwen::dequantize_row(t, q.data(), y.data(), int64_t(x.size()));
  double e = 0, r = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += double(x[i] - y[i]) * (x[i] - y[i]);
    r += double(x[i]) * x[i];
  }
  return std::sqrt(e / r);
}

struct Bound {
  GGMLType type;
  double max_rel_rms;  // on N(0,1): the round-to-nearest figures; for Q4_1, Q5_0, Q5_1,
                       // Q2_K, Q3_K our round-to-nearest measured on 2^20 values, rounded up.
                       // Checked on the default quantizer (the scale search but for Q8_0).
};

const Bound kBounds[] = {
    {GGMLType::Q8_0, 0.0054}, {GGMLType::Q4_0, 0.086}, {GGMLType::Q4_1, 0.0785}, {GGMLType::Q5_0, 0.043},
    {GGMLType::Q5_1, 0.038},  {GGMLType::Q2_K, 0.33},  {GGMLType::Q3_K, 0.155},  {GGMLType::Q4_K, 0.078},
    {GGMLType::Q5_K, 0.038},  {GGMLType::Q6_K, 0.022},
};

// Metric: relative RMS error over 2^20 N(0,1) values; tolerance: the bound table above.
TEST(Quantize, RelativeRmsWithinRoundToNearestBounds) {
  const std::vector<float> x = normal_values(size_t(1) << 20, 11);
  for (const Bound& b : kBounds) {
    const double err = relative_rms(b.type, x, qwen::default_search(b.type));
    EXPECT_LE(err, b.max_rel_rms) << qwen::type_name(b.type);
  }
}

// Metric: relative RMS error; the scale search must beat round-to-nearest on every type that has it.
TEST(Quantize, ScaleSearchBeatsNearest) {
  const std::vector<float> x = normal_values(size_t(1) << 16, 12);
  for (GGMLType t : {GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0, GGMLType::Q5_1, GGMLType::Q2_K,
                     GGMLType::Q3_K, GGMLType::Q4_K, GGMLType::Q5_K, GGMLType::Q6_K}) {
    const double nearest = relative_rms(t, x, ScaleSearch::Nearest);
    const double search = relative_rms(t, x, ScaleSearch::Search);
    EXPECT_LT(search, nearest) << qwen::type_name(t);
  }
}

// Zero rows come back as exact zeros; rows of one value within 2e-3 relative RMS (the value then
// rests on fp16 scales, 2^-11 relative each, times a 4- to 8-bit sub-block scale).
TEST(Quantize, ZeroAndConstantRows) {
  for (const Bound& b : kBounds) {
    std::vector<float> zeros(512, 0.f), y(512);
    std::vector<uint8_t> q(qwen::row_bytes(b.type, 512));
    qwen::quantize_row(b.type, zeros.data(), q.data(), 512);
    qwen::dequantize_row(b.type, q.data(), y.data(), 512);
    for (float yi : y) ASSERT_EQ(yi, 0.f) << qwen::type_name(b.type);
    for (float v : {0.5f, -2.f})
      EXPECT_LT(relative_rms(b.type, std::vector<float>(512, v), qwen::default_search(b.type)), 2e-3)
          << qwen::type_name(b.type) << " value " << v;
  }
}

TEST(Quantize, RejectsBadRequests) {
  std::vector<float> x(100, 1.f);
  std::vector<uint8_t> q(1024);
  EXPECT_THROW(qwen::quantize_row(GGMLType::Q4_0, x.data(), q.data(), 100), qwen::Error);  // not 32k
  EXPECT_THROW(qwen::quantize_row(GGMLType::Q8_1, x.data(), q.data(), 64), qwen::Error);   // no writer
  EXPECT_THROW(qwen::quantize_row(GGMLType::Q8_0, x.data(), q.data(), 64, ScaleSearch::Search), qwen::Error);
  EXPECT_THROW(qwen::quantize_row(GGMLType::F16, x.data(), q.data(), 64, ScaleSearch::Search), qwen::Error);
}

TEST(Recipe, ParsesLlamaQuantizeNames) {
  EXPECT_EQ(qwen::parse_mix("Q4_K_M").file_type, 15u);
  EXPECT_EQ(qwen::parse_mix("q4_k").file_type, 15u);  // alias of Q4_K_M, any case
  EXPECT_EQ(qwen::parse_mix("Q3_K_S").base, GGMLType::Q3_K);
  EXPECT_EQ(qwen::parse_mix("Q8_0").file_type, 7u);
  EXPECT_EQ(qwen::parse_mix("Q6_K").file_type, 18u);
  try {
    qwen::parse_mix("Q7_X");
    FAIL() << "no error";
  } catch (const qwen::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q7_X"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("Q4_K_M"), std::string::npos);
  }
}

// The Qwen2.5-0.5B shape: 24 layers, 14/2 heads, tied output, hidden 896 (not a multiple of 256).
qwen::ModelShape qwen05b() {
  return {24, 14, 2, 24, false};
}

GGMLType pick(const char* mix, const std::string& name, int64_t ne0 = 4864, int n_dims = 2,
              bool pure = false) {
  return qwen::pick_type(qwen::parse_mix(mix), pure, qwen05b(), name, n_dims, ne0, GGMLType::F32).type;
}

TEST(Recipe, Q4KMUsesMoreBitsOnTheLlamaQuantizeLayers) {
  // use_more_bits(i, 24): i < 3, i >= 21, or (i - 3) % 3 == 2.
  for (int i = 0; i < 24; ++i) {
    const bool more = i < 3 || i >= 21 || (i - 3) % 3 == 2;
    const std::string p = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(pick("Q4_K_M", p + "ffn_down.weight"), more ? GGMLType::Q6_K : GGMLType::Q4_K) << i;
    EXPECT_EQ(pick("Q4_K_M", p + "attn_v.weight", 1024), more ? GGMLType::Q6_K : GGMLType::Q4_K) << i;
    EXPECT_EQ(pick("Q4_K_M", p + "attn_q.weight", 1024), GGMLType::Q4_K) << i;
  }
}

TEST(Recipe, MixesFollowLlamaQuantize) {
  EXPECT_EQ(pick("Q3_K_M", "blk.1.attn_v.weight", 1024), GGMLType::Q5_K);
  EXPECT_EQ(pick("Q3_K_M", "blk.2.attn_v.weight", 1024), GGMLType::Q4_K);
  EXPECT_EQ(pick("Q3_K_M", "blk.0.ffn_down.weight"), GGMLType::Q5_K);  // i < 24/16
  EXPECT_EQ(pick("Q3_K_M", "blk.1.ffn_down.weight"), GGMLType::Q4_K);
  EXPECT_EQ(pick("Q3_K_M", "blk.5.attn_output.weight", 1024), GGMLType::Q4_K);
  EXPECT_EQ(pick("Q3_K_L", "blk.5.attn_output.weight", 1024), GGMLType::Q5_K);
  EXPECT_EQ(pick("Q3_K_S", "blk.5.attn_output.weight", 1024), GGMLType::Q3_K);
  EXPECT_EQ(pick("Q4_K_S", "blk.3.attn_v.weight", 1024), GGMLType::Q5_K);
  EXPECT_EQ(pick("Q4_K_S", "blk.4.attn_v.weight", 1024), GGMLType::Q4_K);
  EXPECT_EQ(pick("Q4_K_S", "blk.2.ffn_down.weight"), GGMLType::Q5_K);
  EXPECT_EQ(pick("Q4_K_S", "blk.3.ffn_down.weight"), GGMLType::Q4_K);
  EXPECT_EQ(pick("Q2_K", "blk.3.attn_v.weight", 1024), GGMLType::Q4_K);  // 14 / 2 heads >= 4
  EXPECT_EQ(pick("Q2_K", "blk.3.ffn_down.weight"), GGMLType::Q3_K);
  EXPECT_EQ(pick("Q5_K_S", "blk.0.ffn_down.weight"), GGMLType::Q5_K);
  // Tied embedding as the output: Q6_K, or Q8_0 when its rows do not fill 256-blocks (896).
  EXPECT_EQ(pick("Q4_K_M", "token_embd.weight", 1024), GGMLType::Q6_K);
  EXPECT_EQ(pick("Q4_K_M", "token_embd.weight", 896), GGMLType::Q8_0);
  EXPECT_EQ(pick("Q4_0", "token_embd.weight", 1024), GGMLType::Q6_K);
  EXPECT_EQ(pick("Q8_0", "token_embd.weight", 1024), GGMLType::Q8_0);
  // 1-D tensors and norms keep their type.
  EXPECT_EQ(pick("Q4_K_M", "blk.0.attn_norm.weight", 896, 1), GGMLType::F32);
  EXPECT_EQ(pick("Q4_K_M", "blk.0.attn_q.bias", 896, 1), GGMLType::F32);
  EXPECT_EQ(pick("Q4_K_M", "blk.0.attn_q_norm.weight", 64, 2), GGMLType::F32);
  // --pure: every weight in the base type, the output too.
  EXPECT_EQ(pick("Q4_K_M", "blk.0.ffn_down.weight", 4864, 2, true), GGMLType::Q4_K);
  EXPECT_EQ(pick("Q4_K_M", "token_embd.weight", 1024, 2, true), GGMLType::Q4_K);
}

TEST(Recipe, RowsNotFillingBlocksFallBackAsLlamaQuantize) {
  const qwen::QuantMix& m = qwen::parse_mix("Q4_K_M");
  const qwen::TensorPick p =
      qwen::pick_type(m, false, qwen05b(), "blk.4.attn_q.weight", 2, 896, GGMLType::F32);
  EXPECT_EQ(p.type, GGMLType::Q5_0);
  EXPECT_NE(p.fallback.find("Q4_K -> Q5_0"), std::string::npos) << p.fallback;
  EXPECT_EQ(pick("Q6_K", "blk.4.attn_q.weight", 896), GGMLType::Q8_0);
  EXPECT_EQ(pick("Q5_K_S", "blk.4.attn_q.weight", 896), GGMLType::Q5_1);
  EXPECT_EQ(pick("Q3_K_S", "blk.4.attn_q.weight", 896), GGMLType::Q4_0);
  EXPECT_EQ(pick("Q4_K_M", "blk.4.attn_q.weight", 40), GGMLType::F16);  // not even 32-blocks
  try {
    pick("Q4_0", "blk.4.attn_q.weight", 40);
    FAIL() << "no error";
  } catch (const qwen::Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.4.attn_q.weight"), std::string::npos);
  }
}

// The writer's output read back by the reader: metadata values and types, tensor table, bytes.
TEST(Writer, RoundTripsThroughTheReader) {
  const std::string path = (std::filesystem::temp_directory_path() / "qwen_writer_test.gguf").string();
  using qwen::gguf::Value;
  using qwen::gguf::ValueType;
  auto arr = std::make_shared<qwen::gguf::Array>();
  arr->elem_type = ValueType::STRING;
  arr->items = {{ValueType::STRING, std::string("a")}, {ValueType::STRING, std::string("bc")}};
  std::vector<float> row(64);
  for (size_t i = 0; i < row.size(); ++i) row[i] = float(i) - 20.f;
  std::vector<uint8_t> q(qwen::row_bytes(GGMLType::Q8_0, 64));
  qwen::quantize_row(GGMLType::Q8_0, row.data(), q.data(), 64);
  {
    qwen::gguf::Writer w(path, 64);
    w.add_kv("general.alignment", {ValueType::UINT32, uint64_t(64)});
    w.add_kv("a.f32", {ValueType::FLOAT32, 0.25});
    w.add_kv("a.i8", {ValueType::INT8, int64_t(-3)});
    w.add_kv("a.bool", {ValueType::BOOL, true});
    w.add_kv("a.strs", {ValueType::ARRAY, arr});
    EXPECT_THROW(w.add_kv("a.i8", {ValueType::INT8, int64_t(1)}), qwen::Error);
    w.add_tensor("v", GGMLType::F32, 1, {64, 1, 1, 1});
    w.add_tensor("m", GGMLType::Q8_0, 2, {64, 1, 1, 1});
    w.begin();
    w.write(row.data(), 100);
    w.write(reinterpret_cast<const uint8_t*>(row.data()) + 100, 156);
    EXPECT_THROW(w.write(row.data(), 1), qwen::Error);  // past the tensor's size
    w.end_tensor();
    w.write(q.data(), q.size());
    w.end_tensor();
    w.finish();
  }
  const auto f = qwen::gguf::File::open(path);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->get<float>("a.f32"), 0.25f);
  EXPECT_EQ(f->get<int>("a.i8"), -3);
  EXPECT_TRUE(f->get<bool>("a.bool"));
  EXPECT_EQ(f->get<std::vector<std::string>>("a.strs"), (std::vector<std::string>{"a", "bc"}));
  const auto& m = f->tensor("m");
  EXPECT_EQ(m.type, GGMLType::Q8_0);
  EXPECT_EQ(m.offset % 64, 0u);
  EXPECT_EQ(std::vector<uint8_t>(m.data, m.data + m.nbytes), q);
  EXPECT_EQ(std::memcmp(f->tensor("v").data, row.data(), 256), 0);
  std::filesystem::remove(path);
}

TEST(Writer, UnfinishedFileIsRemovedAndIncompleteTensorRefused) {
  const std::string path = (std::filesystem::temp_directory_path() / "qwen_writer_partial.gguf").string();
  {
    qwen::gguf::Writer w(path, 32);
    w.add_tensor("v", GGMLType::F32, 1, {8, 1, 1, 1});
    w.begin();
    EXPECT_TRUE(std::filesystem::exists(path + ".part"));
    const float x[4] = {};
    w.write(x, sizeof(x));
    EXPECT_THROW(w.end_tensor(), qwen::Error);  // 16 of 32 bytes
  }
  EXPECT_FALSE(std::filesystem::exists(path + ".part"));
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
