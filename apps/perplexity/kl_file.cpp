#include "kl_file.h"

#include <cstring>
#include <filesystem>

#include "util/check.h"

namespace qwen::ppl {
namespace {

constexpr char kMagic[8] = {'Q', 'W', 'E', 'N', 'K', 'L', 'D', '1'};
constexpr uint64_t kHeaderBytes = sizeof(kMagic) + 4 * sizeof(int32_t);

uint64_t chunk_bytes(const KlHeader& h) {
  return uint64_t(h.rows()) * uint64_t(h.n_vocab) * sizeof(float);
}

}  // namespace

KlWriter::KlWriter(const std::string& path, const KlHeader& h) : path_(path), h_(h) {
  QWEN_ASSERT(h.rows() > 0 && h.tokens.size() == size_t(h.n_chunk) * size_t(h.n_ctx));
  out_.open(path, std::ios::binary | std::ios::trunc);
  QWEN_CHECK(out_.good(), "--kl-divergence-base: cannot open ", path, " for writing");
  out_.write(kMagic, sizeof(kMagic));
  for (int32_t v : {h.n_ctx, h.n_vocab, h.n_chunk, h.first}) out_.write(reinterpret_cast<const char*>(&v), 4);
  out_.write(reinterpret_cast<const char*>(h.tokens.data()), std::streamsize(h.tokens.size() * 4));
  QWEN_CHECK(out_.good(), "--kl-divergence-base: writing ", path, " failed");
}

void KlWriter::add_chunk(std::span<const float> logits) {
  QWEN_ASSERT(written_ < h_.n_chunk && logits.size_bytes() == chunk_bytes(h_));
  out_.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size_bytes()));
  QWEN_CHECK(out_.good(), "--kl-divergence-base: writing ", path_, " failed (disk full?)");
  ++written_;
}

void KlWriter::finish() {
  QWEN_ASSERT(written_ == h_.n_chunk);
  out_.close();
  QWEN_CHECK(!out_.fail(), "--kl-divergence-base: closing ", path_, " failed");
}

KlReader::KlReader(const std::string& path) : path_(path) {
  in_.open(path, std::ios::binary);
  QWEN_CHECK(in_.good(), "--kl-divergence-base: cannot open ", path);
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  QWEN_CHECK(!ec, "--kl-divergence-base: cannot stat ", path, ": ", ec.message());
  char magic[8] = {};
  in_.read(magic, sizeof(magic));
  QWEN_CHECK(in_.good() && std::memcmp(magic, kMagic, sizeof(kMagic)) == 0, "--kl-divergence-base: ", path,
             " is not a file written by qwen-perplexity --kl-divergence-base (bad magic)");
  int32_t* fields[] = {&h_.n_ctx, &h_.n_vocab, &h_.n_chunk, &h_.first};
  for (int32_t* f : fields) in_.read(reinterpret_cast<char*>(f), 4);
  QWEN_CHECK(in_.good(), "--kl-divergence-base: ", path, " ends inside its header");
  QWEN_CHECK(h_.n_ctx >= 4, "--kl-divergence-base: ", path, ": n_ctx = ", h_.n_ctx, " is below 4");
  QWEN_CHECK(h_.n_vocab > 0, "--kl-divergence-base: ", path, ": n_vocab = ", h_.n_vocab, " is not positive");
  QWEN_CHECK(h_.n_chunk > 0, "--kl-divergence-base: ", path, ": n_chunk = ", h_.n_chunk, " is not positive");
  QWEN_CHECK(h_.first >= 1 && h_.rows() > 0, "--kl-divergence-base: ", path, ": first = ", h_.first,
             " leaves no scored position in a window of ", h_.n_ctx);
  const uint64_t n_tokens = uint64_t(h_.n_chunk) * uint64_t(h_.n_ctx);
  data_offset_ = kHeaderBytes + n_tokens * 4;
  const uint64_t want = data_offset_ + uint64_t(h_.n_chunk) * chunk_bytes(h_);
  QWEN_CHECK(size == want, "--kl-divergence-base: ", path, " has ", size, " bytes; its header (n_ctx ",
             h_.n_ctx, ", n_vocab ", h_.n_vocab, ", n_chunk ", h_.n_chunk, ") needs ", want,
             " (truncated or not written to the end)");
  h_.tokens.resize(n_tokens);
  in_.read(reinterpret_cast<char*>(h_.tokens.data()), std::streamsize(n_tokens * 4));
  QWEN_CHECK(in_.good(), "--kl-divergence-base: reading the tokens of ", path, " failed");
}

void KlReader::read_chunk(int32_t c, std::vector<float>& logits) {
  QWEN_ASSERT(c >= 0 && c < h_.n_chunk);
  logits.resize(size_t(h_.rows()) * size_t(h_.n_vocab));
  in_.seekg(std::streamoff(data_offset_ + uint64_t(c) * chunk_bytes(h_)));
  in_.read(reinterpret_cast<char*>(logits.data()), std::streamsize(logits.size() * sizeof(float)));
  QWEN_CHECK(in_.good(), "--kl-divergence-base: reading chunk ", c, " of ", path_, " failed");
}

}  // namespace qwen::ppl
