// The ggml type table and the dispatch of row kernels by type.
#include "gguf/ggml_types.h"

#include <array>
#include <cctype>

#include "gguf/quants_impl.h"
#include "util/check.h"

namespace qwen {

namespace {

struct Entry {
  uint32_t id;
  TypeTraits traits;
};

// Every type id ggml has assigned (ids 4, 5, 31-33 and 36-38 were retired), so that a file with a
// type we cannot compute with still opens and lists; `supported` marks the ones with CPU kernels.
// Sizes are ggml's block structs. Q8_1 is {fp16 d, fp16 s, i8 qs[32]} = 36 bytes as in ggml
// (the PyPI gguf package's table says 40, from an older layout).
constexpr Entry kTypes[] = {
    {0, {"F32", 1, 4, true}},          {1, {"F16", 1, 2, true}},          {2, {"Q4_0", 32, 18, true}},
    {3, {"Q4_1", 32, 20, true}},       {6, {"Q5_0", 32, 22, true}},       {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},       {9, {"Q8_1", 32, 36, false}},      {10, {"Q2_K", 256, 84, true}},
    {11, {"Q3_K", 256, 110, true}},    {12, {"Q4_K", 256, 144, true}},    {13, {"Q5_K", 256, 176, true}},
    {14, {"Q6_K", 256, 210, true}},    {15, {"Q8_K", 256, 292, false}},   {16, {"IQ2_XXS", 256, 66, false}},
    {17, {"IQ2_XS", 256, 74, false}},  {18, {"IQ3_XXS", 256, 98, false}}, {19, {"IQ1_S", 256, 50, false}},
    {20, {"IQ4_NL", 32, 18, false}},   {21, {"IQ3_S", 256, 110, false}},  {22, {"IQ2_S", 256, 82, false}},
    {23, {"IQ4_XS", 256, 136, false}}, {24, {"I8", 1, 1, false}},         {25, {"I16", 1, 2, false}},
    {26, {"I32", 1, 4, false}},        {27, {"I64", 1, 8, false}},        {28, {"F64", 1, 8, false}},
    {29, {"IQ1_M", 256, 56, false}},   {30, {"BF16", 1, 2, true}},        {34, {"TQ1_0", 256, 54, false}},
    {35, {"TQ2_0", 256, 66, false}},   {39, {"MXFP4", 32, 17, false}},    {40, {"NVFP4", 64, 36, false}},
    {41, {"Q1_0", 128, 18, false}},
};

constexpr uint32_t kMaxId = 64;

struct Tables {
  std::array<const TypeTraits*, kMaxId> traits{};
  std::array<quants::RowKernels, kMaxId> kernels{};
  Tables() {
    for (const Entry& e : kTypes) {
      traits[e.id] = &e.traits;
      if (!e.traits.supported) continue;
      quants::RowKernels k = quants::basic_kernels(GGMLType(e.id));
      if (!k.dequantize) k = quants::k_kernels(GGMLType(e.id));
      QWEN_ASSERT(k.dequantize && k.dot);
      kernels[e.id] = k;
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

// Kernels for t, or an error naming the type when it has none.
const quants::RowKernels& kernels_for(GGMLType t, const char* op) {
  const uint32_t id = uint32_t(t);
  if (id >= kMaxId || !tables().kernels[id].dequantize)
    throw Error(str(op, ": ggml type ", type_name(t), " (id ", id, ") is not supported on the CPU"));
  return tables().kernels[id];
}

}  // namespace

const TypeTraits* type_traits(uint32_t id) {
  return id < kMaxId ? tables().traits[id] : nullptr;
}

const TypeTraits& type_traits(GGMLType t) {
  const TypeTraits* tt = type_traits(uint32_t(t));
  if (!tt) throw Error(str("unknown ggml type id ", uint32_t(t)));
  return *tt;
}

const char* type_name(GGMLType t) {
  const TypeTraits* tt = type_traits(uint32_t(t));
  return tt ? tt->name : "UNKNOWN";
}

GGMLType parse_type(const std::string& name) {
  std::string up;
  for (const char c : name) up += char(std::toupper(static_cast<unsigned char>(c)));
  for (const Entry& e : kTypes)
    if (up == e.traits.name) return GGMLType(e.id);
  throw Error(str("unknown ggml type name '", name, "'"));
}

size_t row_bytes(GGMLType t, int64_t n) {
  const TypeTraits& tt = type_traits(t);
  QWEN_CHECK(n >= 0 && n % tt.block_size == 0, "row of ", n, " elements is not a whole number of ", tt.name,
             " blocks (block size ", tt.block_size, ")");
  return size_t(n / tt.block_size) * tt.block_bytes;
}

void dequantize_row(GGMLType t, const void* src, float* dst, int64_t n) {
  const quants::RowKernels& k = kernels_for(t, "dequantize_row");
  QWEN_CHECK(n % type_traits(t).block_size == 0, "dequantize_row: ", n, " elements is not a whole number of ",
             type_name(t), " blocks");
  k.dequantize(src, dst, n);
}

float vec_dot(GGMLType t, const void* row, const float* x, int64_t n) {
  const quants::RowKernels& k = kernels_for(t, "vec_dot");
  QWEN_CHECK(n % type_traits(t).block_size == 0, "vec_dot: ", n, " elements is not a whole number of ",
             type_name(t), " blocks");
  return k.dot(row, x, n);
}

DequantizeRowFn dequantize_row_fn(GGMLType t) {
  return kernels_for(t, "dequantize_row").dequantize;
}
VecDotFn vec_dot_fn(GGMLType t) {
  return kernels_for(t, "vec_dot").dot;
}

}  // namespace qwen
