// GGUF reader on valid files built byte by byte: every metadata type (incl. nested arrays), the
// typed getters and their errors, tensor table, alignment, v2, mmap from disk.
// Metric: exact equality of every parsed field and value.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

#include "gguf/gguf.h"
#include "test_gguf_builder.h"
#include "util/check.h"

namespace {

using namespace qwen::test;
using qwen::Error;
using qwen::GGMLType;
using qwen::gguf::File;
using qwen::gguf::ValueType;

std::shared_ptr<File> parse(const RawGguf& g) {
  return File::from_bytes("mem.gguf", g.bytes());
}

// Runs f, expects a qwen::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, std::initializer_list<const char*> parts) {
  try {
    f();
    FAIL() << "no error thrown";
  } catch (const Error& e) {
    for (const char* p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(GgufReader, SmallFileHeaderAndTensors) {
  const auto f = parse(small_file());
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  ASSERT_EQ(f->tensors().size(), 3u);
  const auto& a = f->tensor("a");
  EXPECT_EQ(a.type, GGMLType::F32);
  EXPECT_EQ(a.n_dims, 2);
  EXPECT_EQ(a.ne[0], 4);
  EXPECT_EQ(a.ne[1], 3);
  EXPECT_EQ(a.ne[2], 1);
  EXPECT_EQ(a.n_elements(), 12);
  EXPECT_EQ(a.nbytes, 48u);
  EXPECT_EQ(a.shape_str(), "4x3");
  float v[12];
  std::memcpy(v, a.data, sizeof v);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(v[i], float(i));
  const auto& b = f->tensor("b");
  EXPECT_EQ(b.type, GGMLType::Q8_0);
  EXPECT_EQ(b.nbytes, 68u);
  EXPECT_EQ(b.offset, 64u);
  EXPECT_EQ(b.data, a.data + 64);
  EXPECT_EQ(f->tensor("c").nbytes, 10u);
  EXPECT_EQ(f->find_tensor("zzz"), nullptr);
  expect_error([&] { f->tensor("zzz"); }, {"mem.gguf", "zzz"});
}

TEST(GgufReader, EveryScalarTypeAndNestedArrays) {
  RawGguf g;
  g.kvs = {
      kv("u8", U8, enc<uint8_t>(200)),
      kv("i8", I8, enc<int8_t>(-100)),
      kv("u16", U16, enc<uint16_t>(60000)),
      kv("i16", I16, enc<int16_t>(-30000)),
      kv("u32", U32, enc<uint32_t>(4000000000u)),
      kv("i32", I32, enc<int32_t>(-2000000000)),
      kv("f32", F32, enc<float>(0.1f)),
      kv("bool", BOOL, enc<uint8_t>(1)),
      kv("str", STR, enc_str("héllo \"q\"")),
      kv("u64", U64, enc<uint64_t>(18446744073709551615ull)),
      kv("i64", I64, enc<int64_t>(-9223372036854775807ll - 1)),
      kv("f64", F64, enc<double>(1e300)),
      kv("empty_str", STR, enc_str("")),
      kv("i32s", ARR,
         enc_arr(I32, 3,
                 [] {
                   Bytes e;
                   for (int32_t x : {-1, 0, 7}) put(e, x);
                   return e;
                 }())),
      kv("empty_arr", ARR, enc_arr(F32, 0, {})),
      // [[1, 2], [3]] as arrays of u16
      kv("nested", ARR,
         enc_arr(ARR, 2,
                 [] {
                   Bytes e = enc_arr(U16, 2, [] {
                     Bytes x;
                     put<uint16_t>(x, 1);
                     put<uint16_t>(x, 2);
                     return x;
                   }());
                   append(e, enc_arr(U16, 1, enc<uint16_t>(3)));
                   return e;
                 }())),
  };
  const auto f = parse(g);
  ASSERT_EQ(f->metadata().size(), g.kvs.size());
  EXPECT_EQ(f->metadata()[0].first, "u8");  // file order kept
  EXPECT_EQ(f->get<uint8_t>("u8"), 200);
  EXPECT_EQ(f->get<int8_t>("i8"), -100);
  EXPECT_EQ(f->get<uint16_t>("u16"), 60000);
  EXPECT_EQ(f->get<int16_t>("i16"), -30000);
  EXPECT_EQ(f->get<uint32_t>("u32"), 4000000000u);
  EXPECT_EQ(f->get<int32_t>("i32"), -2000000000);
  EXPECT_EQ(f->get<float>("f32"), 0.1f);
  EXPECT_EQ(f->get<bool>("bool"), true);
  EXPECT_EQ(f->get<std::string>("str"), "héllo \"q\"");
  EXPECT_EQ(f->get<uint64_t>("u64"), 18446744073709551615ull);
  EXPECT_EQ(f->get<int64_t>("i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(f->get<double>("f64"), 1e300);
  EXPECT_EQ(f->get<std::string>("empty_str"), "");
  EXPECT_EQ(f->get<std::vector<int32_t>>("i32s"), (std::vector<int32_t>{-1, 0, 7}));
  EXPECT_TRUE(f->get<std::vector<float>>("empty_arr").empty());
  // Width conversions when the value fits.
  EXPECT_EQ(f->get<int64_t>("u32"), 4000000000ll);
  EXPECT_EQ(f->get<uint64_t>("u8"), 200u);
  EXPECT_EQ(f->get<double>("f32"), double(0.1f));
  const auto* nested = f->find("nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->type, ValueType::ARRAY);
  const auto& outer = *std::get<std::shared_ptr<qwen::gguf::Array>>(nested->v);
  EXPECT_EQ(outer.elem_type, ValueType::ARRAY);
  ASSERT_EQ(outer.items.size(), 2u);
  const auto& inner = *std::get<std::shared_ptr<qwen::gguf::Array>>(outer.items[1].v);
  EXPECT_EQ(inner.elem_type, ValueType::UINT16);
  EXPECT_EQ(std::get<uint64_t>(inner.items[0].v), 3u);
  EXPECT_EQ(nested->to_string(), "[[1, 2], [3]]");
  EXPECT_EQ(f->find("f32")->to_string(), "0.1");
  EXPECT_EQ(f->find("str")->to_string(), "\"héllo \\\"q\\\"\"");
  EXPECT_TRUE(f->tensors().empty());
}

TEST(GgufReader, GetterErrorsNameKeyAndTypes) {
  const auto f = parse(small_file());
  expect_error([&] { f->get<uint32_t>("qwen2.missing"); }, {"mem.gguf", "'qwen2.missing'", "not found"});
  expect_error([&] { f->get<uint32_t>("general.architecture"); },
               {"mem.gguf", "'general.architecture'", "STRING", "integer"});
  expect_error([&] { f->get<int8_t>("tokenizer.ggml.tokens"); }, {"ARRAY"});
  expect_error([&] { f->get<std::vector<int32_t>>("tokenizer.ggml.tokens"); },
               {"item 0", "STRING", "integer"});
  expect_error([&] { f->get<std::vector<std::string>>("qwen2.block_count"); }, {"UINT32", "array of string"});
  RawGguf g;
  g.kvs = {kv("big", U32, enc<uint32_t>(300)), kv("neg", I32, enc<int32_t>(-1))};
  const auto h = parse(g);
  expect_error([&] { h->get<uint8_t>("big"); }, {"'big'", "300", "uint8"});
  expect_error([&] { h->get<uint32_t>("neg"); }, {"'neg'", "-1", "uint32"});
  EXPECT_EQ(h->get_or<uint32_t>("absent", 7u), 7u);
  EXPECT_EQ(f->get<std::vector<std::string>>("tokenizer.ggml.tokens"),
            (std::vector<std::string>{"hello", "world"}));
}

TEST(GgufReader, LongArraysSummarised) {
  RawGguf g;
  Bytes e;
  for (int i = 0; i < 100; ++i) put_str(e, std::to_string(i));
  g.kvs = {kv("toks", ARR, enc_arr(STR, 100, e))};
  EXPECT_EQ(parse(g)->find("toks")->to_string(3), "[STRING x 100: \"0\", \"1\", \"2\", ...]");
}

TEST(GgufReader, CustomAlignmentAndVersion2) {
  RawGguf g = small_file();
  g.version = 2;
  g.alignment = 256;
  g.kvs.push_back(kv("general.alignment", U32, enc<uint32_t>(256)));
  g.tensors = {{"x", {8}, 0, 0}, {"y", {8}, 0, 256}};
  g.data.assign(256 + 32, 0);
  const auto f = parse(g);
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->alignment(), 256u);
  EXPECT_EQ(f->data_offset() % 256, 0u);
  EXPECT_EQ(f->tensor("y").data, f->tensor("x").data + 256);
}

// general.alignment = 1 is legal, so an F32 tensor may start at an odd address; the kernels read
// rows bytewise and must give the same values as from an aligned copy.
TEST(GgufReader, AlignmentOneAllowsUnalignedF32Rows) {
  RawGguf g;
  g.alignment = 1;
  g.kvs = {kv("general.alignment", U32, enc<uint32_t>(1))};
  g.tensors = {{"h", {1}, 1, 0}, {"f", {17}, 0, 2}, {"g", {1}, 24, 70}};  // "g": I8, stays unread
  g.data.assign(71, 0);
  for (int i = 0; i < 17; ++i) {
    const float v = float(i) - 3.5f;
    std::memcpy(g.data.data() + 2 + 4 * i, &v, 4);
  }
  const auto f = parse(g);
  const auto& t = f->tensor("f");
  EXPECT_EQ(t.offset, 2u);
  float aligned[17], deq[17], x[17];
  std::memcpy(aligned, t.data, sizeof aligned);
  for (int i = 0; i < 17; ++i) x[i] = float(i % 5);
  qwen::dequantize_row(GGMLType::F32, t.data, deq, 17);
  EXPECT_EQ(0, std::memcmp(deq, aligned, sizeof deq));
  EXPECT_EQ(qwen::vec_dot(GGMLType::F32, t.data, x, 17), qwen::vec_dot(GGMLType::F32, aligned, x, 17));
}

TEST(GgufReader, UnsupportedButKnownTypeOpens) {
  RawGguf g;
  g.tensors = {{"iq", {256, 2}, 16, 0}};  // IQ2_XXS: 66 bytes per 256 elements
  g.data.assign(132, 0);
  const auto f = parse(g);
  EXPECT_EQ(f->tensor("iq").nbytes, 132u);
  EXPECT_STREQ(qwen::type_name(f->tensor("iq").type), "IQ2_XXS");
  EXPECT_FALSE(qwen::type_traits(f->tensor("iq").type).supported);
}

TEST(GgufReader, OpenFromDiskUsesMapping) {
  char path[] = "/tmp/qwen_gguf_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  const Bytes bytes = small_file().bytes();
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  {
    const auto f = File::open(path);
    EXPECT_EQ(f->path(), path);
    EXPECT_EQ(f->size(), bytes.size());
    EXPECT_EQ(f->get<std::string>("general.architecture"), "qwen2");
    float v;
    std::memcpy(&v, f->tensor("a").data + 4 * 11, 4);
    EXPECT_EQ(v, 11.f);
  }
  std::remove(path);
  expect_error([&] { File::open(path); }, {path, "cannot open"});
  expect_error([] { File::open("/tmp"); }, {"/tmp", "not a regular file"});
}

}  // namespace
