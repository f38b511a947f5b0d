#include "gguf/file_type.h"

#include <cstdint>
#include <map>

#include "gguf/ggml_types.h"
#include "gguf/gguf.h"

namespace qwen::gguf {
namespace {

// llama.cpp's llama_ftype values (the PyPI gguf package's LlamaFileType), without the MOSTLY_
// prefix. Numbers 4-6 were retired upstream and are absent on purpose.
const char* ftype_name(int64_t ftype) {
  switch (ftype) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 19: return "IQ2_XXS";
    case 20: return "IQ2_XS";
    case 21: return "Q2_K_S";
    case 22: return "IQ3_XS";
    case 23: return "IQ3_XXS";
    case 24: return "IQ1_S";
    case 25: return "IQ4_NL";
    case 26: return "IQ3_S";
    case 27: return "IQ3_M";
    case 28: return "IQ2_S";
    case 29: return "IQ2_M";
    case 30: return "IQ4_XS";
    case 31: return "IQ1_M";
    case 32: return "BF16";
    case 36: return "TQ1_0";
    case 37: return "TQ2_0";
    default: return nullptr;
  }
}

}  // namespace

std::string file_type_name(const File& f) {
  // A number this table lacks (a newer upstream type) falls through to the tensor census.
  if (f.has("general.file_type")) {
    if (const char* name = ftype_name(f.get<int64_t>("general.file_type"))) return name;
  }
  std::map<GGMLType, int64_t> elements;
  for (const TensorInfo& t : f.tensors()) {
    if (t.n_dims == 2) elements[t.type] += t.n_elements();
  }
  const GGMLType* best = nullptr;
  int64_t most = -1;
  for (const auto& [type, n] : elements) {
    if (n > most) best = &type, most = n;
  }
  return best != nullptr ? type_name(*best) : "unknown";
}

}  // namespace qwen::gguf
