#include "runtime/tap_trace.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "gguf/gguf.h"
#include "model/model.h"
#include "runtime/kv_cache.h"
#include "util/check.h"

namespace qwen {

void TapTrace::add(const Tapped& t) {
  char key[96];
  if (t.layer >= 0) {
    std::snprintf(key, sizeof key, "L%02d.%.*s", t.layer, int(t.name.size()), t.name.data());
  } else {
    std::snprintf(key, sizeof key, "%.*s", int(t.name.size()), t.name.data());
  }
  auto it = index.find(key);
  if (it == index.end()) {
    it = index.emplace(key, tensors.size()).first;
    tensors.push_back({key, std::string(t.kernel), t.cols, {}});
  }
  TapTensor& x = tensors[it->second];
  QWEN_CHECK(x.cols == t.cols, "tap ", key, ": ", t.cols, " columns after ", x.cols);
  const std::string k(t.kernel);
  // Kernels seen before are kept once: '/'-separated names, each compared whole.
  const std::string joined = "/" + x.kernel + "/";
  if (joined.find("/" + k + "/") == std::string::npos) x.kernel += "/" + k;
  x.data.insert(x.data.end(), t.data, t.data + t.rows * t.cols);
}

const TapTensor* TapTrace::find(const std::string& key) const {
  auto it = index.find(key);
  return it == index.end() ? nullptr : &tensors[it->second];
}

TapTrace trace_forward(Backend& be, const gguf::File& f, std::span<const int32_t> ids, bool step,
                       GGMLType kv_type) {
  QWEN_CHECK(!ids.empty(), "trace_forward: no tokens");
  const int n = int(ids.size());
  const int batch = step ? 1 : n;
  Model model(f, be, batch);
  QWEN_CHECK(*std::max_element(ids.begin(), ids.end()) < model.config().n_vocab &&
                 *std::min_element(ids.begin(), ids.end()) >= 0,
             "a token id is outside the vocabulary of ", model.config().n_vocab);
  KVCache kv(be, model.config(), 1, n, kv_type);
  std::vector<int32_t> pos(n), seq(n, 0), rows(n);
  for (int i = 0; i < n; ++i) pos[i] = i, rows[i] = i;
  auto* ids_d = static_cast<int32_t*>(be.alloc(n * 4));
  auto* pos_d = static_cast<int32_t*>(be.alloc(n * 4));
  auto* seq_d = static_cast<int32_t*>(be.alloc(n * 4));
  auto* rows_d = static_cast<int32_t*>(be.alloc(n * 4));
  auto* logits_d = static_cast<float*>(be.alloc(size_t(batch) * model.config().n_vocab * 4));
  be.upload(ids_d, ids.data(), n * 4);
  be.upload(pos_d, pos.data(), n * 4);
  be.upload(seq_d, seq.data(), n * 4);
  be.upload(rows_d, rows.data(), n * 4);
  TapTrace trace;
  const TapSink tap = [&](const Tapped& t) { trace.add(t); };
  for (int start = 0; start < n; start += batch) {
    const Batch b{batch, ids_d + start, pos_d + start, seq_d + start};
    model.forward(b, kv.layers(), rows_d, batch, logits_d, tap);
  }
  for (void* p : {static_cast<void*>(ids_d), static_cast<void*>(pos_d), static_cast<void*>(seq_d),
                  static_cast<void*>(rows_d), static_cast<void*>(logits_d)})
    be.free(p);
  return trace;
}

TapDiff compare(const TapTensor& a, const TapTensor& b) {
  QWEN_CHECK(a.data.size() == b.data.size() && a.cols == b.cols && a.cols > 0, "compare ", a.key, ": ",
             a.data.size(), " values of ", a.cols, " columns vs ", b.data.size(), " of ", b.cols);
  TapDiff m;
  const int64_t n = int64_t(a.data.size()), rows = n / a.cols;
  double num = 0, den = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double rn = 0, rd = 0;
    for (int64_t i = r * a.cols; i < (r + 1) * a.cols; ++i) {
      const double x = a.data[i], y = b.data[i];
      if (!std::isfinite(x) || !std::isfinite(y)) {
        ++m.non_finite;
        continue;
      }
      rn += (y - x) * (y - x);
      rd += x * x;
      m.max_abs = std::max(m.max_abs, std::abs(y - x));
    }
    num += rn, den += rd;
    const double row_nmse = rd > 0 ? rn / rd : rn;
    if (row_nmse > m.worst_row_nmse || m.worst_row < 0) m.worst_row_nmse = row_nmse, m.worst_row = r;
  }
  m.nmse = den > 0 ? num / den : num;
  m.ref_rms = std::sqrt(den / double(std::max<int64_t>(1, n)));
  return m;
}

const TapTensor* first_divergence(const TapTrace& ref, const TapTrace& got, double tol) {
  for (const TapTensor& a : ref.tensors) {
    const TapTensor* b = got.find(a.key);
    if (b == nullptr || b->cols != a.cols || b->data.size() != a.data.size() || compare(a, *b).diverges(tol))
      return &a;
  }
  return nullptr;
}

}  // namespace qwen
