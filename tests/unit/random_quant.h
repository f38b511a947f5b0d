// Random rows of every ggml weight type for the quant tests: the block layouts (size and where the
// fp16 scales sit) and rows of random bytes with finite scales.
#pragma once

#include <cstring>
#include <random>
#include <vector>

#include "gguf/ggml_types.h"
#include "util/half.h"

namespace qwen::test {

struct Layout {
  GGMLType type;
  int block_size;
  size_t block_bytes;
  std::vector<size_t> fp16_scales;  // byte offsets of fp16 scale fields within a block
};

// ggml's block structs: size and where their fp16 scales sit.
inline const std::vector<Layout>& layouts() {
  static const std::vector<Layout> l = {
      {GGMLType::F32, 1, 4, {}},           {GGMLType::F16, 1, 2, {}},
      {GGMLType::BF16, 1, 2, {}},          {GGMLType::Q4_0, 32, 18, {0}},
      {GGMLType::Q4_1, 32, 20, {0, 2}},    {GGMLType::Q5_0, 32, 22, {0}},
      {GGMLType::Q5_1, 32, 24, {0, 2}},    {GGMLType::Q8_0, 32, 34, {0}},
      {GGMLType::Q2_K, 256, 84, {80, 82}}, {GGMLType::Q3_K, 256, 110, {108}},
      {GGMLType::Q4_K, 256, 144, {0, 2}},  {GGMLType::Q5_K, 256, 176, {0, 2}},
      {GGMLType::Q6_K, 256, 210, {208}},
  };
  return l;
}

// Random row bytes whose float fields are finite: fp16 scales uniform in [-1, 1], F16/BF16/F32
// elements standard normal.
inline std::vector<uint8_t> random_row(const Layout& l, int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  std::vector<uint8_t> row(qwen::row_bytes(l.type, n));
  if (l.type == GGMLType::F32 || l.type == GGMLType::F16 || l.type == GGMLType::BF16) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = normal(rng);
      if (l.type == GGMLType::F32) {
        std::memcpy(row.data() + 4 * i, &v, 4);
      } else {
        const uint16_t h = l.type == GGMLType::F16 ? qwen::f32_to_fp16(v) : qwen::f32_to_bf16(v);
        std::memcpy(row.data() + 2 * i, &h, 2);
      }
    }
    return row;
  }
  for (uint8_t& b : row) b = uint8_t(rng());
  for (size_t blk = 0; blk < row.size() / l.block_bytes; ++blk)
    for (const size_t off : l.fp16_scales) {
      const uint16_t h = qwen::f32_to_fp16(unit(rng));
      std::memcpy(row.data() + blk * l.block_bytes + off, &h, 2);
    }
  return row;
}

}  // namespace qwen::test
