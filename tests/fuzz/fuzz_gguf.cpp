// libFuzzer target: qwen::gguf::File::from_bytes on arbitrary bytes. A bad file must end in
// qwen::Error; anything else (crash, sanitizer report, other exception, broken invariant) is a bug.
// For files that parse, the harness also renders all metadata and runs the CPU kernels over every
// supported tensor, so out-of-bounds tensor data would show up under AddressSanitizer.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "gguf/gguf.h"
#include "util/check.h"

namespace {

// Invariants the reader promises for every file it accepts.
void check_invariants(const qwen::gguf::File& f, const uint8_t* base) {
  if (f.alignment() == 0 || (f.alignment() & (f.alignment() - 1)) != 0) std::abort();
  for (const qwen::gguf::TensorInfo& t : f.tensors()) {
    if (t.n_dims < 1 || t.n_dims > 4 || t.offset % f.alignment() != 0) std::abort();
    if (t.data < base || t.data + t.nbytes > base + f.size()) std::abort();
    if (qwen::row_bytes(t.type, t.ne[0]) * uint64_t(t.n_elements() / t.ne[0]) != t.nbytes) std::abort();
  }
}

void exercise(const qwen::gguf::File& f) {
  size_t rendered = 0;
  for (const auto& [key, v] : f.metadata()) rendered += key.size() + v.to_string(4).size();
  if (rendered == 0 && !f.metadata().empty()) std::abort();
  // Bounded work per input: kernels run over at most 64Ki elements per tensor.
  std::vector<float> row, x;
  for (const qwen::gguf::TensorInfo& t : f.tensors()) {
    if (!qwen::type_traits(t.type).supported) continue;
    const int64_t n_rows = t.n_elements() / t.ne[0];
    const int64_t rows = std::min<int64_t>(n_rows, std::max<int64_t>(1, 65536 / t.ne[0]));
    if (t.ne[0] > 65536) continue;
    row.resize(size_t(t.ne[0]));
    x.assign(size_t(t.ne[0]), 1.0f);
    const size_t rb = qwen::row_bytes(t.type, t.ne[0]);
    for (int64_t r = 0; r < rows; ++r) {
      qwen::dequantize_row(t.type, t.data + size_t(r) * rb, row.data(), t.ne[0]);
      (void)qwen::vec_dot(t.type, t.data + size_t(r) * rb, x.data(), t.ne[0]);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<qwen::gguf::File> f;
  std::vector<uint8_t> bytes(data, data + size);
  const uint8_t* base = bytes.data();  // moving a std::vector keeps its buffer: the File reads this memory
  try {
    f = qwen::gguf::File::from_bytes("fuzz.gguf", std::move(bytes));
  } catch (const qwen::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  check_invariants(*f, base);
  exercise(*f);
  return 0;
}
