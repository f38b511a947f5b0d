// GGUF v3 writer that streams tensor data: the header, metadata and tensor table are written first
// (every tensor's type and shape must be known up front), then each tensor's bytes in order, in as
// many pieces as the caller likes, so no tensor need be held whole in memory.
//
// The file is written as PATH.part and renamed to PATH by finish(); a writer destroyed before
// finish() removes the partial file.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace qwen::gguf {

class Writer {
 public:
  // `alignment` (a power of two) pads every tensor's data; general.alignment must agree when set.
  Writer(std::string path, uint64_t alignment);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Before begin(): metadata in the order added (a repeated key throws), then the tensor table.
  void add_kv(const std::string& key, const Value& value);
  void add_tensor(const std::string& name, GGMLType type, int n_dims, const std::array<int64_t, 4>& ne);

  // Writes header, metadata and tensor table; tensors' data follow in the order they were added.
  void begin();
  // Appends bytes of the current tensor; throws if they overrun its size.
  void write(const void* data, size_t n);
  // Ends the current tensor (its bytes must be complete) and pads to the alignment.
  void end_tensor();
  // After the last tensor: flushes, closes and renames PATH.part to PATH.
  void finish();

  // Bytes of tensor data written so far (all tensors, without padding).
  uint64_t data_written() const { return data_written_; }

 private:
  struct Entry {
    std::string name;
    GGMLType type;
    int n_dims;
    std::array<int64_t, 4> ne;
    uint64_t nbytes;
    uint64_t offset;
  };
  void put(const void* p, size_t n);
  void put_str(const std::string& s);
  void put_value(const Value& v);
  void pad();

  std::string path_, part_path_;
  uint64_t alignment_;
  std::FILE* f_ = nullptr;
  uint64_t pos_ = 0;  // bytes written to the file
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<Entry> tensors_;
  uint64_t next_offset_ = 0;
  size_t current_ = 0;            // index of the tensor being written
  uint64_t current_written_ = 0;  // its bytes so far
  uint64_t data_written_ = 0;
  bool begun_ = false, finished_ = false;
};

}  // namespace qwen::gguf
