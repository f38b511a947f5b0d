// GGUF v2/v3 reader: validated header, typed metadata, tensor table, mmap'd data.
// No model knowledge lives here.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "gguf/ggml_types.h"

namespace qwen::gguf {

// On-disk metadata value type ids.
enum class ValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};
const char* value_type_name(ValueType t);

struct Value;
struct Array {
  ValueType elem_type;
  std::vector<Value> items;
};

struct Value {
  ValueType type;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<Array>> v;
  // Human-readable rendering; long arrays summarised as "[STRING x 151936: "a", "b", ...]".
  std::string to_string(size_t max_items = 8) const;
};

struct TensorInfo {
  std::string name;
  GGMLType type;
  int n_dims;                 // 1..4
  std::array<int64_t, 4> ne;  // ne[0] = innermost (contiguous) dimension; unused dims are 1
  uint64_t offset;            // relative to the data section
  uint64_t nbytes;
  const uint8_t* data;  // points into the mapping
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  std::string shape_str() const;  // "896x151936"
};

class File {
 public:
  // Opens and validates; throws qwen::Error naming the file, the field / tensor and the bad value.
  static std::shared_ptr<File> open(const std::string& path);
  // Same validation over bytes in memory (tests, fuzzing). `name` appears in error messages.
  static std::shared_ptr<File> from_bytes(const std::string& name, std::vector<uint8_t> bytes);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t size() const { return size_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  bool has(std::string_view key) const { return find(key) != nullptr; }
  const Value* find(std::string_view key) const;

  // Typed getters. T: bool, any integer type, float, double, std::string, std::vector<std::string>,
  // std::vector<int32_t>, std::vector<uint32_t>, std::vector<int64_t>, std::vector<float>,
  // std::vector<double>. Integers convert between widths when the value fits; float/double also
  // accept integer values.
  // Errors name the file, the key, the expected and the found type (or the missing key).
  template <class T>
  T get(std::string_view key) const;
  template <class T>
  T get_or(std::string_view key, T fallback) const {
    return has(key) ? get<T>(key) : fallback;
  }

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  const TensorInfo& tensor(std::string_view name) const;  // throws naming the tensor and file

 private:
  File() = default;
  struct Mapping;
  std::unique_ptr<Mapping> map_;
  std::string path_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  uint64_t size_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  friend class Parser;
};

}  // namespace qwen::gguf
