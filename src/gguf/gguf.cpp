// GGUF reader: parses and validates the whole header at open, then hands out pointers into the
// mapping. Every read is bounds-checked against the file size before it happens, every count is
// checked against the bytes that could possibly hold it before anything is allocated, and every
// size computation is overflow-checked, so a hostile file can only produce a qwen::Error.
//
// On-disk layout (little-endian):
//   "GGUF" u32 version  u64 n_tensors  u64 n_kv
//   n_kv    x { string key, u32 value_type, value }
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   padding to `general.alignment` (default 32), then the data section; tensor offsets are relative
//   to its start. string = u64 length + bytes; array = u32 elem_type + u64 count + elements.
#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "util/check.h"

namespace qwen::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;  // nesting limit: bounds recursion on hostile input

// Smallest encoding of one element of each value type: lets us reject counts that cannot fit in
// the rest of the file before allocating anything for them.
uint64_t min_encoded_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::BOOL:
      return 1;
    case ValueType::UINT16:
    case ValueType::INT16:
      return 2;
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::FLOAT32:
      return 4;
    case ValueType::UINT64:
    case ValueType::INT64:
    case ValueType::FLOAT64:
    case ValueType::STRING:  // u64 length
      return 8;
    case ValueType::ARRAY:  // u32 type + u64 count
      return 12;
  }
  return 1;
}

bool valid_value_type(uint32_t t) {
  return t <= uint32_t(ValueType::FLOAT64);
}

}  // namespace

// Owns the bytes: either an mmap of the file or a buffer handed to from_bytes().
struct File::Mapping {
  void* addr = nullptr;
  size_t length = 0;
  std::vector<uint8_t> buffer;
  ~Mapping() {
    if (addr) munmap(addr, length);
  }
  const uint8_t* data() const { return addr ? static_cast<const uint8_t*>(addr) : buffer.data(); }
};

// Cursor over the header. `what` describes the field being read so truncation errors name it.
class Parser {
 public:
  Parser(File& f, const uint8_t* data, uint64_t size) : f_(f), data_(data), size_(size) {}

  void parse() {
    parse_header();
    for (uint64_t i = 0; i < n_kv_; ++i) parse_kv(i);
    read_alignment();
    for (uint64_t i = 0; i < n_tensors_; ++i) parse_tensor_info(i);
    f_.data_offset_ = align_up(pos_, f_.alignment_, "data section offset");
    validate_tensor_data();
  }

 private:
  template <class... Args>
  [[noreturn]] void fail(const Args&... args) const {
    throw Error(str(f_.path_, ": ", args...));
  }

  uint64_t left() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      fail("unexpected end of file reading ", what, " at offset ", pos_, " (need ", n, " bytes, ", left(),
           " left)");
  }

  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what + " length");
    if (len > left())
      fail(what, ": string length ", len, " at offset ", pos_ - 8, " runs past the end of the file (", left(),
           " bytes left)");
    std::string s(reinterpret_cast<const char*>(data_ + pos_), size_t(len));
    pos_ += len;
    return s;
  }

  uint64_t align_up(uint64_t x, uint64_t a, const char* what) const {
    const uint64_t r = x % a;
    if (r == 0) return x;
    if (x > std::numeric_limits<uint64_t>::max() - (a - r)) fail(what, " overflows: ", x, " aligned to ", a);
    return x + (a - r);
  }

  void parse_header() {
    need(4, "magic");
    uint32_t magic;
    std::memcpy(&magic, data_, 4);
    if (magic != kMagic) {
      char shown[5] = {};
      for (int i = 0; i < 4; ++i) {
        const char c = char(data_[i]);
        shown[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
      }
      fail("bad magic 0x", std::hex, magic, std::dec, " (\"", shown,
           "\"), expected \"GGUF\": not a GGUF file");
    }
    pos_ = 4;
    const uint32_t version = read<uint32_t>("version");
    if (version == 0x02000000u || version == 0x03000000u)
      fail("version field reads ", version,
           ": this is a big-endian GGUF file, only little-endian is supported");
    if (version == 1) fail("GGUF version 1 is not supported (only versions 2 and 3)");
    if (version != 2 && version != 3) fail("unsupported GGUF version ", version, " (only versions 2 and 3)");
    f_.version_ = version;
    n_tensors_ = read<uint64_t>("tensor count");
    n_kv_ = read<uint64_t>("metadata key/value count");
    // Each kv takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least
    // 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
    if (n_kv_ > left() / 13)
      fail("metadata key/value count ", n_kv_, " cannot fit in the ", left(), " bytes after the header");
    if (n_tensors_ > left() / 32)
      fail("tensor count ", n_tensors_, " cannot fit in the ", left(), " bytes after the header");
  }

  Value parse_value(ValueType t, const std::string& what, int depth) {
    Value v;
    v.type = t;
    switch (t) {
      case ValueType::UINT8:
        v.v = uint64_t(read<uint8_t>(what));
        break;
      case ValueType::UINT16:
        v.v = uint64_t(read<uint16_t>(what));
        break;
      case ValueType::UINT32:
        v.v = uint64_t(read<uint32_t>(what));
        break;
      case ValueType::UINT64:
        v.v = read<uint64_t>(what);
        break;
      case ValueType::INT8:
        v.v = int64_t(read<int8_t>(what));
        break;
      case ValueType::INT16:
        v.v = int64_t(read<int16_t>(what));
        break;
      case ValueType::INT32:
        v.v = int64_t(read<int32_t>(what));
        break;
      case ValueType::INT64:
        v.v = read<int64_t>(what);
        break;
      case ValueType::FLOAT32:
        v.v = double(read<float>(what));
        break;
      case ValueType::FLOAT64:
        v.v = read<double>(what);
        break;
      case ValueType::BOOL: {
        const uint8_t b = read<uint8_t>(what);
        if (b > 1) fail(what, ": bool value ", int(b), " at offset ", pos_ - 1, " is neither 0 nor 1");
        v.v = b == 1;
        break;
      }
      case ValueType::STRING:
        v.v = read_string(what);
        break;
      case ValueType::ARRAY:
        v.v = parse_array(what, depth + 1);
        break;
    }
    return v;
  }

  std::shared_ptr<Array> parse_array(const std::string& what, int depth) {
    if (depth > kMaxArrayDepth) fail(what, ": arrays nested deeper than ", kMaxArrayDepth, " levels");
    const uint32_t et = read<uint32_t>(what + " element type");
    if (!valid_value_type(et)) fail(what, ": unknown array element type ", et, " at offset ", pos_ - 4);
    const uint64_t count = read<uint64_t>(what + " element count");
    const ValueType elem = ValueType(et);
    if (count > left() / min_encoded_size(elem))
      fail(what, ": array of ", count, " ", value_type_name(elem), " at offset ", pos_ - 8,
           " cannot fit in the ", left(), " bytes left");
    auto arr = std::make_shared<Array>();
    arr->elem_type = elem;
    arr->items.reserve(size_t(count));
    for (uint64_t i = 0; i < count; ++i) {
      if (elem == ValueType::ARRAY) {
        arr->items.push_back(Value{ValueType::ARRAY, parse_array(str(what, "[", i, "]"), depth + 1)});
      } else if (elem == ValueType::STRING) {
        arr->items.push_back(Value{ValueType::STRING, read_string(str(what, "[", i, "]"))});
      } else {
        arr->items.push_back(parse_value(elem, what, depth));
      }
    }
    return arr;
  }

  void parse_kv(uint64_t i) {
    const uint64_t at = pos_;
    std::string key = read_string(str("metadata key #", i));
    const std::string what = str("metadata key '", key, "'");
    if (f_.kv_index_.count(key)) fail("duplicate ", what, " (entry #", i, " at offset ", at, ")");
    const uint32_t t = read<uint32_t>(what + " value type");
    if (!valid_value_type(t)) fail(what, ": unknown value type ", t, " at offset ", pos_ - 4);
    Value v = parse_value(ValueType(t), what, 0);
    f_.kv_index_.emplace(key, f_.kv_.size());
    f_.kv_.emplace_back(std::move(key), std::move(v));
  }

  // general.alignment must be a u32 power of two (as ggml requires); it governs tensor offsets and
  // the start of the data section.
  void read_alignment() {
    const Value* a = f_.find("general.alignment");
    if (!a) return;
    if (a->type != ValueType::UINT32)
      fail("metadata key 'general.alignment' has type ", value_type_name(a->type), ", expected UINT32");
    const uint64_t v = std::get<uint64_t>(a->v);
    if (v == 0 || (v & (v - 1)) != 0)
      fail("metadata key 'general.alignment' is ", v, ", expected a non-zero power of two");
    f_.alignment_ = v;
  }

  void parse_tensor_info(uint64_t i) {
    TensorInfo t;
    t.name = read_string(str("tensor #", i, " name"));
    const std::string what = str("tensor '", t.name, "'");
    if (t.name.empty()) fail("tensor #", i, " has an empty name");
    if (f_.tensor_index_.count(t.name)) fail("duplicate ", what, " (tensor #", i, ")");
    const uint32_t n_dims = read<uint32_t>(what + " n_dims");
    if (n_dims == 0 || n_dims > kMaxDims) fail(what, ": n_dims is ", n_dims, ", expected 1..", kMaxDims);
    t.n_dims = int(n_dims);
    t.ne = {1, 1, 1, 1};
    int64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = read<uint64_t>(str(what, " ne[", d, "]"));
      if (ne == 0 || ne > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(what, ": dimension ne[", d, "] is ", int64_t(ne), ", expected a positive size");
      t.ne[d] = int64_t(ne);
      if (__builtin_mul_overflow(n_el, t.ne[d], &n_el))
        fail(what, ": element count of shape ", t.shape_str(), " overflows 64 bits");
    }
    const uint32_t type_id = read<uint32_t>(what + " type");
    const TypeTraits* tt = type_traits(type_id);
    if (!tt) fail(what, ": unknown ggml type id ", type_id);
    t.type = GGMLType(type_id);
    if (t.ne[0] % tt->block_size != 0)
      fail(what, ": ne[0] = ", t.ne[0], " is not a multiple of the ", tt->name, " block size ",
           tt->block_size);
    const uint64_t blocks = uint64_t(n_el / tt->block_size);
    if (__builtin_mul_overflow(blocks, uint64_t(tt->block_bytes), &t.nbytes))
      fail(what, ": byte size of ", blocks, " ", tt->name, " blocks overflows 64 bits");
    t.offset = read<uint64_t>(what + " offset");
    if (t.offset % f_.alignment_ != 0)
      fail(what, ": data offset ", t.offset, " is not a multiple of the alignment ", f_.alignment_);
    t.data = nullptr;
    f_.tensor_index_.emplace(t.name, f_.tensors_.size());
    f_.tensors_.push_back(std::move(t));
  }

  void validate_tensor_data() {
    if (f_.tensors_.empty()) return;  // a metadata-only file need not carry the trailing padding
    if (f_.data_offset_ > size_)
      fail("data section starts at offset ", f_.data_offset_, " past the end of the file (size ", size_, ")");
    const uint64_t data_size = size_ - f_.data_offset_;
    for (TensorInfo& t : f_.tensors_) {
      uint64_t end;
      if (__builtin_add_overflow(t.offset, t.nbytes, &end) || end > data_size)
        fail("tensor '", t.name, "': data [", t.offset, ", ", t.offset, " + ", t.nbytes,
             ") runs past the end of the data section (", data_size, " bytes)");
      t.data = data_ + f_.data_offset_ + t.offset;
    }
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(f_.tensors_.size());
    for (const TensorInfo& t : f_.tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const TensorInfo& a = *by_offset[i - 1];
      const TensorInfo& b = *by_offset[i];
      if (a.offset + a.nbytes > b.offset)
        fail("tensors '", a.name, "' (data [", a.offset, ", ", a.offset + a.nbytes, ")) and '", b.name,
             "' (data [", b.offset, ", ", b.offset + b.nbytes, ")) overlap");
    }
  }

  File& f_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t n_kv_ = 0;
  uint64_t n_tensors_ = 0;
};

File::~File() = default;

std::shared_ptr<File> File::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(str(path, ": cannot open: ", std::strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(str(path, ": cannot stat: ", std::strerror(e)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(str(path, ": not a regular file"));
  }
  std::shared_ptr<File> f(new File());
  f->path_ = path;
  f->map_ = std::make_unique<Mapping>();
  f->size_ = uint64_t(st.st_size);
  if (f->size_ > 0) {
    void* addr = mmap(nullptr, size_t(f->size_), PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error(str(path, ": cannot mmap ", f->size_, " bytes: ", std::strerror(e)));
    }
    f->map_->addr = addr;
    f->map_->length = size_t(f->size_);
  }
  ::close(fd);  // the mapping stays valid after the descriptor is closed
  Parser(*f, f->map_->data(), f->size_).parse();
  return f;
}

std::shared_ptr<File> File::from_bytes(const std::string& name, std::vector<uint8_t> bytes) {
  std::shared_ptr<File> f(new File());
  f->path_ = name;
  f->map_ = std::make_unique<Mapping>();
  f->map_->buffer = std::move(bytes);
  f->size_ = f->map_->buffer.size();
  Parser(*f, f->map_->data(), f->size_).parse();
  return f;
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::tensor(std::string_view name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) throw Error(str(path_, ": no tensor named '", name, "'"));
  return *t;
}

std::string TensorInfo::shape_str() const {
  std::string s;
  for (int d = 0; d < n_dims; ++d) {
    if (d) s += 'x';
    s += std::to_string(ne[d]);
  }
  return s;
}

}  // namespace qwen::gguf
