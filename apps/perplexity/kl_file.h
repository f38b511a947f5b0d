// The file --kl-divergence-base writes and --kl-divergence reads: the scored windows' tokens and
// the base model's logits at every scored position, so a second model (another weight type,
// another backend) can be compared with the first without running both at once.
//
// Layout, little-endian:
//   "QWENKLD1"                                  8 bytes
//   int32 n_ctx, n_vocab, n_chunk, first        first: the first scored position of a window
//   int32 tokens[n_chunk][n_ctx]                the windows as evaluated
//   float32 logits[n_chunk][n_ctx - 1 - first][n_vocab]
// Row j of a chunk holds the logits after tokens[0 .. first + j], which score tokens[first + j + 1].
// The logits are kept exactly as the engine produced them (llama.cpp packs log-probabilities into
// 16 bits), so both sides of a comparison are turned into log-probabilities by the same double
// precision code: a KL divergence of 1e-5 is not lost in float32 rounding of values near -12, and
// a model compared with its own file gives exactly 0.
#pragma once

#include <cstdint>
#include <fstream>
#include <span>
#include <string>
#include <vector>

namespace qwen::ppl {

struct KlHeader {
  int32_t n_ctx = 0, n_vocab = 0, n_chunk = 0, first = 0;
  std::vector<int32_t> tokens;  // [n_chunk][n_ctx]
  int32_t rows() const { return n_ctx - 1 - first; }
};

class KlWriter {
 public:
  // Writes the header and the tokens; throws qwen::Error naming the path.
  KlWriter(const std::string& path, const KlHeader& h);
  // One chunk's rows() x n_vocab logits, in chunk order.
  void add_chunk(std::span<const float> logits);
  // Checks that every chunk was written and the file is complete.
  void finish();

 private:
  std::string path_;
  KlHeader h_;
  int32_t written_ = 0;
  std::ofstream out_;
};

class KlReader {
 public:
  // Reads and validates the header against the file size; errors name the path and the field.
  explicit KlReader(const std::string& path);
  const KlHeader& header() const { return h_; }
  // Chunk c's rows() x n_vocab logits.
  void read_chunk(int32_t c, std::vector<float>& logits);

 private:
  std::string path_;
  KlHeader h_;
  std::ifstream in_;
  uint64_t data_offset_ = 0;
};

}  // namespace qwen::ppl
