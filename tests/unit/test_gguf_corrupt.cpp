// Corrupt GGUF files: each corruption must raise qwen::Error with its own message naming the file,
// the field or tensor and the bad value, and never crash. Metric: the error is thrown and its
// message contains the listed substrings (exact match of those parts, no tolerance).
#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "gguf/gguf.h"
#include "test_gguf_builder.h"
#include "util/check.h"

namespace {

using namespace qwen::test;
using qwen::gguf::File;

struct Case {
  const char* name;
  std::function<Bytes()> make;
  std::vector<std::string> expect;  // substrings of the error message
};

template <class T>
void patch(Bytes& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(T));
}

RawGguf one_tensor(RawTensor t, size_t data_bytes) {
  RawGguf g;
  g.tensors = {std::move(t)};
  g.data.assign(data_bytes, 0);
  return g;
}

// Offset of the first metadata key's length field: after magic, version and the two counts.
constexpr size_t kFirstKv = 24;

std::vector<Case> cases() {
  return {
      {"empty file", [] { return Bytes{}; }, {"c.gguf", "unexpected end of file reading magic"}},
      {"bad magic",
       [] {
         Bytes b = small_file().bytes();
         b[3] = 'G';
         return b;
       },
       {"c.gguf", "bad magic 0x47554747", "\"GGUG\"", "not a GGUF file"}},
      {"version 1",
       [] {
         RawGguf g = small_file();
         g.version = 1;
         return g.bytes();
       },
       {"GGUF version 1 is not supported"}},
      {"version 4",
       [] {
         RawGguf g = small_file();
         g.version = 4;
         return g.bytes();
       },
       {"unsupported GGUF version 4"}},
      {"big-endian",
       [] {
         RawGguf g = small_file();
         g.version = 0x03000000;
         return g.bytes();
       },
       {"big-endian"}},
      {"huge tensor count",
       [] {
         RawGguf g = small_file();
         g.n_tensors = 1ull << 60;
         return g.bytes();
       },
       {"tensor count 1152921504606846976 cannot fit"}},
      {"huge kv count",
       [] {
         RawGguf g = small_file();
         g.n_kv = ~0ull;
         return g.bytes();
       },
       {"metadata key/value count 18446744073709551615 cannot fit"}},
      {"key length past EOF",
       [] {
         Bytes b = small_file().bytes();
         patch<uint64_t>(b, kFirstKv, 1ull << 40);
         return b;
       },
       {"metadata key #0", "string length 1099511627776", "past the end of the file"}},
      {"string value length past EOF",
       [] {
         RawGguf g;
         Bytes v;
         put<uint64_t>(v, 1000);
         v.insert(v.end(), {'a', 'b'});
         g.kvs = {kv("general.name", STR, v)};
         return g.bytes();
       },
       {"metadata key 'general.name'", "string length 1000", "past the end of the file"}},
      {"unknown value type",
       [] {
         RawGguf g;
         g.kvs = {kv("k", 13, enc<uint32_t>(0))};
         return g.bytes();
       },
       {"metadata key 'k'", "unknown value type 13"}},
      {"unknown array element type",
       [] {
         RawGguf g;
         g.kvs = {kv("arr", ARR, enc_arr(99, 1, enc<uint32_t>(0)))};
         return g.bytes();
       },
       {"metadata key 'arr'", "unknown array element type 99"}},
      {"huge array count",
       [] {
         RawGguf g;
         g.kvs = {kv("arr", ARR, enc_arr(U32, 1ull << 61, enc<uint32_t>(0)))};
         return g.bytes();
       },
       {"metadata key 'arr'", "array of 2305843009213693952 UINT32", "cannot fit"}},
      {"arrays nested too deep",
       [] {
         Bytes v = enc_arr(U8, 1, enc<uint8_t>(0));
         for (int i = 0; i < 20; ++i) v = enc_arr(ARR, 1, v);
         RawGguf g;
         g.kvs = {kv("deep", ARR, v)};
         return g.bytes();
       },
       {"metadata key 'deep'", "nested deeper than 8"}},
      {"bool not 0 or 1",
       [] {
         RawGguf g;
         g.kvs = {kv("flag", BOOL, enc<uint8_t>(2))};
         return g.bytes();
       },
       {"metadata key 'flag'", "bool value 2"}},
      {"duplicate key",
       [] {
         RawGguf g = small_file();
         g.kvs.push_back(kv("qwen2.block_count", U32, enc<uint32_t>(3)));
         return g.bytes();
       },
       {"duplicate metadata key 'qwen2.block_count'", "entry #3"}},
      {"alignment not a power of two",
       [] {
         RawGguf g = small_file();
         g.kvs.push_back(kv("general.alignment", U32, enc<uint32_t>(48)));
         return g.bytes();
       },
       {"'general.alignment' is 48", "power of two"}},
      {"alignment zero",
       [] {
         RawGguf g = small_file();
         g.kvs.push_back(kv("general.alignment", U32, enc<uint32_t>(0)));
         return g.bytes();
       },
       {"'general.alignment' is 0"}},
      {"alignment wrong type",
       [] {
         RawGguf g = small_file();
         g.kvs.push_back(kv("general.alignment", STR, enc_str("32")));
         return g.bytes();
       },
       {"'general.alignment' has type STRING, expected UINT32"}},
      {"unknown tensor type",
       [] {
         return one_tensor({"w", {32}, 4, 0}, 128).bytes();
       },
       {"tensor 'w'", "unknown ggml type id 4"}},
      {"tensor type far out of range",
       [] {
         return one_tensor({"w", {32}, 1u << 31, 0}, 128).bytes();
       },
       {"tensor 'w'", "unknown ggml type id 2147483648"}},
      {"n_dims 0",
       [] {
         return one_tensor({"w", {}, 0, 0}, 128).bytes();
       },
       {"tensor 'w'", "n_dims is 0"}},
      {"n_dims 5",
       [] {
         return one_tensor({"w", {1, 1, 1, 1, 1}, 0, 0}, 128).bytes();
       },
       {"tensor 'w'", "n_dims is 5"}},
      {"zero dimension",
       [] {
         return one_tensor({"w", {4, 0}, 0, 0}, 128).bytes();
       },
       {"tensor 'w'", "ne[1] is 0"}},
      {"negative dimension",
       [] {
         return one_tensor({"w", {4, ~0ull}, 0, 0}, 128).bytes();
       },
       {"tensor 'w'", "ne[1] is -1"}},
      {"element count overflow",
       [] {
         return one_tensor({"w", {1ull << 32, 1ull << 32}, 0, 0}, 128).bytes();
       },
       {"tensor 'w'", "element count", "overflows"}},
      {"byte size overflow",
       [] {
         return one_tensor({"w", {1ull << 62}, 0, 0}, 128).bytes();
       },
       {"tensor 'w'", "byte size", "overflows"}},
      {"row not whole blocks",
       [] {
         return one_tensor({"w", {33, 2}, 8, 0}, 128).bytes();
       },
       {"tensor 'w'", "ne[0] = 33", "Q8_0 block size 32"}},
      {"misaligned offset",
       [] {
         return one_tensor({"w", {4}, 0, 8}, 128).bytes();
       },
       {"tensor 'w'", "offset 8", "alignment 32"}},
      {"tensor data past EOF",
       [] {
         return one_tensor({"w", {64}, 0, 64}, 128).bytes();
       },
       {"tensor 'w'", "[64, 64 + 256)", "past the end of the data section (128 bytes)"}},
      {"offset plus size overflows",
       [] {
         return one_tensor({"w", {8}, 0, ~0ull - 31}, 128).bytes();
       },
       {"tensor 'w'", "past the end of the data section"}},
      {"overlapping tensors",
       [] {
         RawGguf g = small_file();
         g.tensors[2].offset = 96;  // "c" (F16 [5]) inside "b" (Q8_0, bytes [64, 132))
         return g.bytes();
       },
       {"tensors 'b'", "'c'", "overlap"}},
      {"duplicate tensor name",
       [] {
         RawGguf g = small_file();
         g.tensors[2].name = "a";
         return g.bytes();
       },
       {"duplicate tensor 'a'", "tensor #2"}},
      {"empty tensor name",
       [] {
         RawGguf g = small_file();
         g.tensors[1].name = "";
         return g.bytes();
       },
       {"tensor #1 has an empty name"}},
      {"tensor name length past EOF",
       [] {
         RawGguf g;
         g.tensors = {{std::string(10, 'x'), {4}, 0, 0}};
         Bytes b = g.bytes();
         patch<uint64_t>(b, kFirstKv, 1ull << 50);
         return b;
       },
       {"tensor #0 name", "string length 1125899906842624"}},
  };
}

TEST(GgufCorrupt, EachCorruptionHasItsOwnError) {
  const std::vector<Case> all = cases();
  ASSERT_GE(all.size(), 15u);
  std::set<std::string> messages;
  for (const Case& c : all) {
    SCOPED_TRACE(c.name);
    try {
      File::from_bytes("c.gguf", c.make());
      ADD_FAILURE() << "no error for: " << c.name;
    } catch (const qwen::Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("c.gguf: ", 0), 0u) << msg;  // every message starts with the file name
      for (const std::string& part : c.expect) EXPECT_NE(msg.find(part), std::string::npos) << msg;
      EXPECT_TRUE(messages.insert(msg).second) << "same message as another case: " << msg;
    }
  }
}

// Every strict prefix of a valid file is an error (never a crash, never accepted), and the full
// file parses. The small file ends in tensor data, so even a file cut inside the data section
// must be rejected.
TEST(GgufCorrupt, TruncatedAtEveryOffset) {
  const Bytes full = small_file().bytes();
  ASSERT_NO_THROW(File::from_bytes("full.gguf", full));
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    try {
      File::from_bytes("cut.gguf", Bytes(full.begin(), full.begin() + long(n)));
      ADD_FAILURE() << "prefix of " << n << " bytes accepted";
    } catch (const qwen::Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("cut.gguf: ", 0), 0u) << msg;
      EXPECT_TRUE(msg.find("unexpected end of file") != std::string::npos ||
                  msg.find("past the end") != std::string::npos ||
                  msg.find("cannot fit") != std::string::npos)
          << msg;
    }
  }
}

// Single-byte changes anywhere in the header must give a clean result: parsed or qwen::Error.
TEST(GgufCorrupt, ByteFlipsInHeaderNeverCrash) {
  const RawGguf g = small_file();
  const Bytes full = g.bytes();
  const size_t header = full.size() - g.data.size();
  size_t errors = 0;
  for (size_t i = 0; i < header; ++i) {
    for (const uint8_t x : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xff)}) {
      Bytes b = full;
      b[i] ^= x;
      try {
        File::from_bytes("flip.gguf", std::move(b));
      } catch (const qwen::Error&) {
        ++errors;
      }
    }
  }
  EXPECT_GT(errors, header);  // most flips in structural fields are detected
}

}  // namespace
