// KV cache types at the runtime's boundary: the bytes KVCache allocates per type (what
// Engine::kv_bytes and qwen-cli's load line report), the types and head sizes it refuses, and the
// command-line resolution of --kv-type / -ctk / -ctv shared by the apps. All checks exact.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backend/backend.h"
#include "runtime/kv_cache.h"
#include "util/check.h"

namespace qwen {
namespace {

ModelConfig shape(int head_dim) {
  ModelConfig c;
  c.n_layer = 3;
  c.n_head = 4;
  c.n_head_kv = 2;
  c.head_dim = head_dim;
  return c;
}

// Expects f() to throw a qwen::Error whose message holds every word.
template <class F>
void expect_error(F f, const std::vector<std::string>& words) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const std::string& w : words)
      EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
  }
}

// Bytes: layers x {K, V} x slots x positions x one row of n_head_kv * head_dim elements, the row
// in its type: 4 or 2 bytes an element, Q8_0 34 bytes per 32 elements.
TEST(KVCache, CountsTheBytesOfEachType) {
  auto be = make_cpu_backend(1);
  const ModelConfig c = shape(64);
  const size_t rows = size_t(3) * 2 * 2 * 10;  // layers x {K, V} x n_seq 2 x n_ctx 10
  for (const auto& [type, row] :
       {std::pair{GGMLType::F32, size_t(128 * 4)}, std::pair{GGMLType::F16, size_t(128 * 2)},
        std::pair{GGMLType::BF16, size_t(128 * 2)}, std::pair{GGMLType::Q8_0, size_t(4 * 34)}}) {
    KVCache kv(*be, c, 2, 10, type);
    EXPECT_EQ(kv.nbytes(), rows * row) << type_name(type);
    EXPECT_EQ(kv.type(), type);
    ASSERT_EQ(kv.layers().size(), 3u);
    // Layers follow each other: K then V, each n_seq * n_ctx rows.
    EXPECT_EQ(static_cast<uint8_t*>(kv.layers()[1].k) - static_cast<uint8_t*>(kv.layers()[0].k),
              std::ptrdiff_t(2 * 2 * 10 * row));
    EXPECT_EQ(kv.layers()[2].type, type);
  }
}

TEST(KVCache, RefusesOtherTypesAndHeadsQ8CannotSplit) {
  auto be = make_cpu_backend(1);
  expect_error([&] { KVCache(*be, shape(64), 1, 8, GGMLType::Q4_0); }, {"Q4_0", "F32, F16, BF16 or Q8_0"});
  expect_error([&] { KVCache(*be, shape(48), 1, 8, GGMLType::Q8_0); }, {"Q8_0", "32", "head_dim is 48"});
  KVCache ok(*be, shape(48), 1, 8, GGMLType::BF16);  // 16-bit types take any head size
  EXPECT_EQ(ok.nbytes(), size_t(3) * 2 * 8 * 96 * 2);
}

TEST(KVCache, TypeFromFlags) {
  EXPECT_FALSE(kv_type_from_flags("auto", "", "").has_value());
  EXPECT_FALSE(kv_type_from_flags("", "", "").has_value());
  EXPECT_EQ(kv_type_from_flags("q8_0", "", ""), GGMLType::Q8_0);
  EXPECT_EQ(kv_type_from_flags("BF16", "", ""), GGMLType::BF16);  // llama.cpp writes lower case; both read
  EXPECT_EQ(kv_type_from_flags("auto", "q8_0", "q8_0"), GGMLType::Q8_0);
  EXPECT_EQ(kv_type_from_flags("auto", "", "bf16"), GGMLType::BF16);  // one of the two is enough
  EXPECT_EQ(kv_type_from_flags("f32", "f32", ""), GGMLType::F32);
  expect_error([] { kv_type_from_flags("auto", "f16", "q8_0"); }, {"-ctk f16", "-ctv q8_0", "differ"});
  expect_error([] { kv_type_from_flags("f16", "q8_0", ""); }, {"--kv-type f16", "-ctk q8_0", "disagree"});
  expect_error([] { kv_type_from_flags("auto", "q4_0", ""); }, {"-ctk q4_0", "f32, f16, bf16 or q8_0"});
  expect_error([] { kv_type_from_flags("q5_1", "", ""); }, {"--kv-type q5_1"});
}

TEST(KVCache, LlamaSpellingsOfTheFlags) {
  const std::vector<std::string> args =
      kv_flag_spellings({"qwen-bench", "-ctk", "q8_0", "-ctv", "q8_0", "-c", "8"});
  EXPECT_EQ(args, (std::vector<std::string>{"qwen-bench", "--cache-type-k", "q8_0", "--cache-type-v", "q8_0",
                                            "-c", "8"}));
}

}  // namespace
}  // namespace qwen
