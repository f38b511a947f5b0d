// GGUF v3 writer (layout in gguf.cpp's header comment). Every write is checked; errors name the
// output file.
#include "gguf/gguf_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "util/check.h"

namespace qwen::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint32_t kVersion = 3;

uint64_t align_up(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

}  // namespace

Writer::Writer(std::string path, uint64_t alignment)
    : path_(std::move(path)), part_path_(path_ + ".part"), alignment_(alignment) {
  QWEN_CHECK(alignment_ != 0 && (alignment_ & (alignment_ - 1)) == 0, path_, ": alignment ", alignment_,
             " is not a power of two");
}

Writer::~Writer() {
  if (f_) std::fclose(f_);
  if (begun_ && !finished_) std::remove(part_path_.c_str());
}

void Writer::add_kv(const std::string& key, const Value& value) {
  QWEN_CHECK(!begun_, path_, ": metadata added after the header was written");
  for (const auto& [k, v] : kv_) QWEN_CHECK(k != key, path_, ": metadata key '", key, "' added twice");
  if (key == "general.alignment")
    QWEN_CHECK(value.type == ValueType::UINT32 && std::get<uint64_t>(value.v) == alignment_, path_,
               ": general.alignment does not match the writer's alignment ", alignment_);
  kv_.emplace_back(key, value);
}

void Writer::add_tensor(const std::string& name, GGMLType type, int n_dims,
                        const std::array<int64_t, 4>& ne) {
  QWEN_CHECK(!begun_, path_, ": tensor '", name, "' added after the header was written");
  QWEN_CHECK(n_dims >= 1 && n_dims <= 4, path_, ": tensor '", name, "' has ", n_dims, " dimensions");
  for (const Entry& e : tensors_) QWEN_CHECK(e.name != name, path_, ": tensor '", name, "' added twice");
  const uint64_t rows = uint64_t(ne[1] * ne[2] * ne[3]);
  const uint64_t nbytes = rows * row_bytes(type, ne[0]);
  tensors_.push_back({name, type, n_dims, ne, nbytes, next_offset_});
  next_offset_ = align_up(next_offset_ + nbytes, alignment_);
}

void Writer::put(const void* p, size_t n) {
  if (n != 0 && std::fwrite(p, 1, n, f_) != n)
    QWEN_FAIL(part_path_, ": write failed after ", pos_, " bytes: ", std::strerror(errno));
  pos_ += n;
}

void Writer::put_str(const std::string& s) {
  const uint64_t n = s.size();
  put(&n, 8);
  put(s.data(), s.size());
}

void Writer::put_value(const Value& v) {
  auto put_int = [&](auto x) { put(&x, sizeof(x)); };
  switch (v.type) {
    case ValueType::UINT8:
      return put_int(uint8_t(std::get<uint64_t>(v.v)));
    case ValueType::UINT16:
      return put_int(uint16_t(std::get<uint64_t>(v.v)));
    case ValueType::UINT32:
      return put_int(uint32_t(std::get<uint64_t>(v.v)));
    case ValueType::UINT64:
      return put_int(std::get<uint64_t>(v.v));
    case ValueType::INT8:
      return put_int(int8_t(std::get<int64_t>(v.v)));
    case ValueType::INT16:
      return put_int(int16_t(std::get<int64_t>(v.v)));
    case ValueType::INT32:
      return put_int(int32_t(std::get<int64_t>(v.v)));
    case ValueType::INT64:
      return put_int(std::get<int64_t>(v.v));
    case ValueType::FLOAT32:  // read from a float: the double holds it exactly
      return put_int(float(std::get<double>(v.v)));
    case ValueType::FLOAT64:
      return put_int(std::get<double>(v.v));
    case ValueType::BOOL:
      return put_int(uint8_t(std::get<bool>(v.v) ? 1 : 0));
    case ValueType::STRING:
      return put_str(std::get<std::string>(v.v));
    case ValueType::ARRAY: {
      const Array& a = *std::get<std::shared_ptr<Array>>(v.v);
      put_int(uint32_t(a.elem_type));
      put_int(uint64_t(a.items.size()));
      for (const Value& item : a.items) put_value(item);
      return;
    }
  }
  QWEN_FAIL(path_, ": metadata value of unknown type ", uint32_t(v.type));
}

void Writer::pad() {
  static const uint8_t zeros[256] = {};
  uint64_t n = align_up(pos_, alignment_) - pos_;
  while (n > 0) {
    const size_t k = size_t(std::min<uint64_t>(n, sizeof(zeros)));
    put(zeros, k);
    n -= k;
  }
}

void Writer::begin() {
  QWEN_CHECK(!begun_, path_, ": header written twice");
  f_ = std::fopen(part_path_.c_str(), "wb");
  QWEN_CHECK(f_ != nullptr, part_path_, ": cannot open for writing: ", std::strerror(errno));
  begun_ = true;
  const uint32_t head[2] = {kMagic, kVersion};
  put(head, sizeof(head));
  const uint64_t counts[2] = {tensors_.size(), kv_.size()};
  put(counts, sizeof(counts));
  for (const auto& [key, value] : kv_) {
    put_str(key);
    const uint32_t t = uint32_t(value.type);
    put(&t, 4);
    put_value(value);
  }
  for (const Entry& e : tensors_) {
    put_str(e.name);
    const uint32_t n_dims = uint32_t(e.n_dims);
    put(&n_dims, 4);
    for (int d = 0; d < e.n_dims; ++d) {
      const uint64_t n = uint64_t(e.ne[d]);
      put(&n, 8);
    }
    const uint32_t type = uint32_t(e.type);
    put(&type, 4);
    put(&e.offset, 8);
  }
  pad();
}

void Writer::write(const void* data, size_t n) {
  QWEN_CHECK(begun_ && current_ < tensors_.size(), path_, ": tensor data written outside a tensor");
  const Entry& e = tensors_[current_];
  QWEN_CHECK(current_written_ + n <= e.nbytes, path_, ": tensor '", e.name, "' given more than its ",
             e.nbytes, " bytes");
  put(data, n);
  current_written_ += n;
  data_written_ += n;
}

void Writer::end_tensor() {
  QWEN_CHECK(begun_ && current_ < tensors_.size(), path_, ": no tensor to end");
  const Entry& e = tensors_[current_];
  QWEN_CHECK(current_written_ == e.nbytes, path_, ": tensor '", e.name, "' has ", current_written_,
             " of its ", e.nbytes, " bytes");
  pad();
  ++current_;
  current_written_ = 0;
}

void Writer::finish() {
  QWEN_CHECK(begun_ && current_ == tensors_.size(), path_, ": finished with ", tensors_.size() - current_,
             " tensors unwritten");
  const int flushed = std::fflush(f_);
  const int closed = std::fclose(f_);
  f_ = nullptr;
  QWEN_CHECK(flushed == 0 && closed == 0, part_path_, ": write failed: ", std::strerror(errno));
  QWEN_CHECK(std::rename(part_path_.c_str(), path_.c_str()) == 0, "cannot rename ", part_path_, " to ", path_,
             ": ", std::strerror(errno));
  finished_ = true;
}

}  // namespace qwen::gguf
