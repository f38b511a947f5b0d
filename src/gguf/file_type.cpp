#include "gguf/file_type.h"

#include <cstdint>
#include <map>
#include <utility>

#include "gguf/ggml_types.h"
#include "gguf/gguf.h"

namespace qwen::gguf {
namespace {

// llama.cpp's llama_ftype values (the PyPI gguf package's LlamaFileType), without the MOSTLY_
// prefix. Numbers 4-6 were retired upstream and are absent on purpose.
constexpr std::pair<int64_t, const char*> kFileTypes[] = {
    {0, "F32"},     {1, "F16"},     {2, "Q4_0"},     {3, "Q4_1"},    {7, "Q8_0"},     {8, "Q5_0"},
    {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"},  {12, "Q3_K_M"}, {13, "Q3_K_L"},  {14, "Q4_K_S"},
    {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"},  {18, "Q6_K"},   {19, "IQ2_XXS"}, {20, "IQ2_XS"},
    {21, "Q2_K_S"}, {22, "IQ3_XS"}, {23, "IQ3_XXS"}, {24, "IQ1_S"},  {25, "IQ4_NL"},  {26, "IQ3_S"},
    {27, "IQ3_M"},  {28, "IQ2_S"},  {29, "IQ2_M"},   {30, "IQ4_XS"}, {31, "IQ1_M"},   {32, "BF16"},
    {36, "TQ1_0"},  {37, "TQ2_0"},
};

}  // namespace

std::string file_type_name(const File& f) {
  // A number this table lacks (a newer upstream type) falls through to the tensor census.
  if (f.has("general.file_type")) {
    const auto ftype = f.get<int64_t>("general.file_type");
    for (const auto& [id, name] : kFileTypes) {
      if (id == ftype) return name;
    }
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
