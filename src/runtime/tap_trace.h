// Tap traces: every named intermediate of a model's forward passes on one backend, as the
// backend computed it (Backend::tap), and their comparison with another backend's. qwen-diff
// prints the comparison; tests/ops/test_tap_fault.cpp checks that it names a planted fault.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace qwen {

namespace gguf {
class File;
}

// One named intermediate over every forward call of a run, rows appended in call order.
struct TapTensor {
  std::string key;     // "L03.attn_norm" or "result_output"
  std::string kernel;  // what wrote it (Tapped::kernel); several calls' different ones joined by '/'
  int64_t cols = 0;
  std::vector<float> data;
};

// Everything one backend produced, in forward order of first appearance.
struct TapTrace {
  std::vector<TapTensor> tensors;
  std::map<std::string, size_t> index;
  void add(const Tapped& t);
  const TapTensor* find(const std::string& key) const;
};

// Runs `ids` through a Model of `f` on `be` from position 0, all of them in one forward or, with
// `step`, one token per forward through a KV cache of kv_type, and records every tap.
TapTrace trace_forward(Backend& be, const gguf::File& f, std::span<const int32_t> ids, bool step,
                       GGMLType kv_type);

// A tensor against the reference's, over all its values: NMSE = sum (b - a)^2 / sum a^2 (finite
// pairs), max |b - a|, the reference's rms, and the row with the largest NMSE.
struct TapDiff {
  double nmse = 0, max_abs = 0, ref_rms = 0, worst_row_nmse = 0;
  int64_t worst_row = -1, non_finite = 0;
  bool diverges(double tol) const { return non_finite > 0 || !(nmse <= tol); }
};
TapDiff compare(const TapTensor& ref, const TapTensor& got);  // same size and cols

// The first tensor of `ref` (forward order) that `got` lacks, has in another shape, or whose
// values diverge beyond NMSE tol; nullptr when there is none.
const TapTensor* first_divergence(const TapTrace& ref, const TapTrace& got, double tol);

}  // namespace qwen
