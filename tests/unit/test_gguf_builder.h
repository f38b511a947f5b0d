// Test helper: writes GGUF bytes field by field, so tests can build valid files and precisely
// corrupted ones (any count, type id, dimension or offset can be set to anything).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qwen::test {

using Bytes = std::vector<uint8_t>;

template <class T>
void put(Bytes& b, T v) {
  const size_t at = b.size();
  b.resize(at + sizeof(T));
  std::memcpy(b.data() + at, &v, sizeof(T));
}

inline void put_str(Bytes& b, std::string_view s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

inline void append(Bytes& b, const Bytes& more) {
  b.insert(b.end(), more.begin(), more.end());
}

// Value type ids as on disk.
enum : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 };

// One metadata entry: key, value type, then the already-encoded value.
inline Bytes kv(std::string_view key, uint32_t type, const Bytes& value) {
  Bytes b;
  put_str(b, key);
  put<uint32_t>(b, type);
  append(b, value);
  return b;
}

template <class T>
Bytes enc(T v) {
  Bytes b;
  put(b, v);
  return b;
}

inline Bytes enc_str(std::string_view s) {
  Bytes b;
  put_str(b, s);
  return b;
}

// Array value: element type, count, then the encoded elements.
inline Bytes enc_arr(uint32_t elem_type, uint64_t count, const Bytes& elems) {
  Bytes b;
  put<uint32_t>(b, elem_type);
  put<uint64_t>(b, count);
  append(b, elems);
  return b;
}

struct RawTensor {
  std::string name;
  std::vector<uint64_t> ne;  // n_dims is ne.size()
  uint32_t type = 0;         // ggml type id
  uint64_t offset = 0;       // relative to the data section
};

struct RawGguf {
  uint32_t magic = 0x46554747;  // "GGUF"
  uint32_t version = 3;
  std::optional<uint64_t> n_tensors;  // default: tensors.size()
  std::optional<uint64_t> n_kv;       // default: kvs.size()
  std::vector<Bytes> kvs;
  std::vector<RawTensor> tensors;
  uint64_t alignment = 32;  // padding before the data section
  Bytes data;               // the data section

  Bytes bytes() const {
    Bytes b;
    put(b, magic);
    put(b, version);
    put<uint64_t>(b, n_tensors.value_or(tensors.size()));
    put<uint64_t>(b, n_kv.value_or(kvs.size()));
    for (const Bytes& e : kvs) append(b, e);
    for (const RawTensor& t : tensors) {
      put_str(b, t.name);
      put<uint32_t>(b, uint32_t(t.ne.size()));
      for (const uint64_t n : t.ne) put(b, n);
      put(b, t.type);
      put(b, t.offset);
    }
    while (b.size() % alignment) b.push_back(0);
    append(b, data);
    return b;
  }
};

// A small valid file: three metadata keys and three tensors
//   "a" F32 [3][4] at 0 (values 0..11), "b" Q8_0 [64] at 64, "c" F16 [5] at 160.
inline RawGguf small_file() {
  RawGguf g;
  g.kvs.push_back(kv("general.architecture", STR, enc_str("qwen2")));
  g.kvs.push_back(kv("qwen2.block_count", U32, enc<uint32_t>(2)));
  g.kvs.push_back(kv("tokenizer.ggml.tokens", ARR, enc_arr(STR, 2, [] {
                       Bytes e;
                       put_str(e, "hello");
                       put_str(e, "world");
                       return e;
                     }())));
  g.tensors.push_back({"a", {4, 3}, 0, 0});
  g.tensors.push_back({"b", {64}, 8, 64});
  g.tensors.push_back({"c", {5}, 1, 160});
  g.data.resize(170, 0);
  for (int i = 0; i < 12; ++i) {
    const float f = float(i);
    std::memcpy(g.data.data() + 4 * i, &f, 4);
  }
  // Q8_0 blocks at 64 and 98: d = 1.0 (fp16 0x3c00), qs = -16..15 and 0..31.
  for (int blk = 0; blk < 2; ++blk) {
    uint8_t* p = g.data.data() + 64 + 34 * blk;
    p[0] = 0x00;
    p[1] = 0x3c;
    for (int j = 0; j < 32; ++j) p[2 + j] = uint8_t(int8_t(blk == 0 ? j - 16 : j));
  }
  const uint16_t halves[5] = {0x3c00, 0xc000, 0x3800, 0x7c00, 0x0001};  // 1, -2, 0.5, inf, 2^-24
  std::memcpy(g.data.data() + 160, halves, sizeof halves);
  return g;
}

}  // namespace qwen::test
