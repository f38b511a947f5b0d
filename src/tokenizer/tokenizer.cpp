#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <unordered_map>

#include "gguf/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/spm.h"
#include "tokenizer/unicode.h"
#include "util/check.h"

namespace qwen {

namespace {

// Control tokens that end a turn or a document in the chat formats we know; they join the EOG
// set even when the GGUF names another token as eos (Qwen base models: eos = <|endoftext|>,
// chat turns end with <|im_end|>).
constexpr std::string_view kEogTexts[] = {
    "<|im_end|>",    "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>",
    "<end_of_turn>", "<|end|>",       "<|return|>", "<|call|>",   "<EOT>",
};

// Byte trie over the texts of the added tokens, for leftmost-longest matching as HF's
// AddedVocabulary does (aho-corasick, MatchKind::LeftmostLongest).
class SpecialTrie {
 public:
  void add(std::string_view text, int32_t id) {
    int node = 0;
    for (char ch : text) {
      auto [it, inserted] = nodes_[node].next.try_emplace(static_cast<uint8_t>(ch), 0);
      if (inserted) {
        it->second = static_cast<int>(nodes_.size());
        nodes_.emplace_back();
      }
      node = it->second;
    }
    nodes_[node].id = id;
  }
  bool empty() const { return nodes_.size() == 1; }
  // Longest token that starts at text[pos]: sets len and id, returns false when none.
  bool match(std::string_view text, size_t pos, size_t& len, int32_t& id) const {
    int node = 0;
    len = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = nodes_[node].next.find(static_cast<uint8_t>(text[i]));
      if (it == nodes_[node].next.end()) break;
      node = it->second;
      if (nodes_[node].id >= 0) len = i + 1 - pos, id = nodes_[node].id;
    }
    return len > 0;
  }

 private:
  struct Node {
    std::unordered_map<uint8_t, int> next;
    int32_t id = -1;
  };
  std::vector<Node> nodes_{1};
};

}  // namespace

struct Tokenizer::Impl {
  TokenizerData d;
  bool is_spm = false;  // tokenizer.ggml.model == "llama"
  spm::Model spm_model;
  pretok::Kind pre_kind = pretok::Kind::kGpt2;
  bool nfc = false;                // the Qwen2 tokenizer normalises input to NFC
  bool ignore_merges = false;      // Llama 3: a piece that is a whole token is taken as is
  std::vector<std::string> bytes;  // [n_vocab] what each token decodes to
  std::unordered_map<std::string, int32_t> normal_by_bytes;  // byte string -> NORMAL token id
  std::unordered_map<std::string, int32_t> by_text;          // raw vocab text -> id
  std::array<int32_t, 256> byte_token{};                     // initial BPE symbol of each byte
  bpe::Merges merges;
  SpecialTrie all_added;   // CONTROL + USER_DEFINED tokens (parse_special)
  SpecialTrie user_added;  // USER_DEFINED tokens only (always matched)
  std::vector<int32_t> eog;

  // Cache of BPE results per piece: the same words recur constantly in real text. Bounded in
  // entries and in piece length (long pieces are rare and would make the memory unbounded).
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;
  static constexpr size_t kCacheMax = 1 << 16;
  static constexpr size_t kCachePieceMax = 64;

  explicit Impl(TokenizerData data);
  TokenType type(int32_t id) const {
    return d.token_types.empty() ? TokenType::kNormal : static_cast<TokenType>(d.token_types[id]);
  }
  void init_gpt2();
  void init_spm();
  void encode_text(std::string_view text, std::vector<int32_t>& out, size_t max_tokens) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_spm(std::string_view text, std::vector<int32_t>& out) const;
};

Tokenizer::Impl::Impl(TokenizerData data) : d(std::move(data)) {
  const std::string& src = d.source;
  const size_t n = d.tokens.size();
  QWEN_CHECK(n > 0, src, ": tokenizer.ggml.tokens is empty");
  QWEN_CHECK(n < (1u << 31), src, ": tokenizer.ggml.tokens has ", n, " entries");
  QWEN_CHECK(d.token_types.empty() || d.token_types.size() == n, src, ": tokenizer.ggml.token_type has ",
             d.token_types.size(), " entries but tokenizer.ggml.tokens has ", n);
  QWEN_CHECK(d.scores.empty() || d.scores.size() == n, src, ": tokenizer.ggml.scores has ", d.scores.size(),
             " entries but tokenizer.ggml.tokens has ", n);
  for (size_t i = 0; i < d.token_types.size(); ++i) {
    QWEN_CHECK(d.token_types[i] >= 0 && d.token_types[i] <= 6, src, ": tokenizer.ggml.token_type[", i,
               "] = ", d.token_types[i], " is not a token type (0..6)");
  }
  const std::pair<const char*, int32_t> ids[] = {
      {"bos_token_id", d.bos_id}, {"eos_token_id", d.eos_id},     {"eot_token_id", d.eot_id},
      {"eom_token_id", d.eom_id}, {"padding_token_id", d.pad_id}, {"unknown_token_id", d.unk_id}};
  for (const auto& [key, id] : ids) {
    QWEN_CHECK(id >= -1 && id < static_cast<int64_t>(n), src, ": tokenizer.ggml.", key, " = ", id,
               " is outside the vocabulary of ", n, " tokens");
  }
  QWEN_CHECK(!d.add_bos || d.bos_id >= 0, src, ": add_bos_token is set but there is no bos_token_id");
  QWEN_CHECK(!d.add_eos || d.eos_id >= 0, src, ": add_eos_token is set but there is no eos_token_id");
  QWEN_CHECK(d.model == "gpt2" || d.model == "llama", src, ": tokenizer.ggml.model '", d.model,
             "' is not supported (supported: gpt2 byte-level BPE, llama SentencePiece BPE)");
  is_spm = d.model == "llama";
  bytes.resize(n);
  by_text.reserve(n);
  for (size_t i = 0; i < n; ++i) by_text.try_emplace(d.tokens[i], static_cast<int32_t>(i));
  if (!is_spm) {
    init_gpt2();
  } else {
    init_spm();
  }
  // Added tokens split the text before the model sees it; they stand for their own text.
  for (size_t i = 0; i < n; ++i) {
    const TokenType t = type(static_cast<int32_t>(i));
    if (d.tokens[i].empty() || (t != TokenType::kControl && t != TokenType::kUserDefined)) continue;
    all_added.add(d.tokens[i], static_cast<int32_t>(i));
    if (t == TokenType::kUserDefined) user_added.add(d.tokens[i], static_cast<int32_t>(i));
  }

  for (int32_t id : {d.eos_id, d.eot_id, d.eom_id}) {
    if (id >= 0) eog.push_back(id);
  }
  for (std::string_view text : kEogTexts) {
    auto it = by_text.find(std::string(text));
    if (it != by_text.end() && type(it->second) == TokenType::kControl) eog.push_back(it->second);
  }
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
}

void Tokenizer::Impl::init_gpt2() {
  const std::string& src = d.source;
  const size_t n = d.tokens.size();
  pre_kind = pretok::from_name(d.pre, src);
  nfc = pre_kind == pretok::Kind::kQwen2;
  ignore_merges = pre_kind == pretok::Kind::kLlama3;

  normal_by_bytes.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto id = static_cast<int32_t>(i);
    if (type(id) == TokenType::kNormal) {
      QWEN_CHECK(bpe::byte_level_decode(d.tokens[i], bytes[i]), src, ": token ", i, " '", d.tokens[i],
                 "' is NORMAL but has a character outside the byte-level BPE alphabet");
      normal_by_bytes.try_emplace(bytes[i], id);
    } else {
      bytes[i] = d.tokens[i];  // added tokens are stored as the text they stand for
    }
  }
  // Vocabularies may lack tokens for bytes their training text never had (SmolLM2 has none for
  // 0x04, 0xC0, 0xF5..0xFF, ...). Such bytes cannot be represented and are dropped from the input,
  // as HF tokenizers (BPE without unk) and llama.cpp do.
  int missing = 0;
  for (int b = 0; b < 256; ++b) {
    auto it = normal_by_bytes.find(std::string(1, static_cast<char>(b)));
    byte_token[b] = it == normal_by_bytes.end() ? -1 : it->second;
    missing += byte_token[b] < 0;
  }
  QWEN_CHECK(missing < 128, src, ": byte-level BPE vocabulary has tokens for only ", 256 - missing,
             " of the 256 bytes (is tokenizer.ggml.model right?)");

  merges.reserve(d.merges.size());
  for (size_t r = 0; r < d.merges.size(); ++r) {
    const std::string& m = d.merges[r];
    const size_t sp = m.find(' ');
    QWEN_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < m.size() && m.find(' ', sp + 1) == m.npos, src,
               ": tokenizer.ggml.merges[", r, "] = '", m, "' is not 'left right'");
    std::string lb, rb;
    const bool ok = bpe::byte_level_decode(std::string_view(m).substr(0, sp), lb) &&
                    bpe::byte_level_decode(std::string_view(m).substr(sp + 1), rb);
    QWEN_CHECK(ok, src, ": tokenizer.ggml.merges[", r, "] = '", m, "' is outside the byte-level alphabet");
    auto l = normal_by_bytes.find(lb), rt = normal_by_bytes.find(rb), mg = normal_by_bytes.find(lb + rb);
    QWEN_CHECK(l != normal_by_bytes.end() && rt != normal_by_bytes.end() && mg != normal_by_bytes.end(), src,
               ": tokenizer.ggml.merges[", r, "] = '", m, "' names a token not in the vocabulary");
    merges.add(l->second, rt->second, static_cast<int32_t>(r), mg->second);
  }
}

void Tokenizer::Impl::init_spm() {
  const std::string& src = d.source;
  const size_t n = d.tokens.size();
  QWEN_CHECK(d.scores.size() == n, src, ": tokenizer.ggml.model is 'llama' but tokenizer.ggml.scores has ",
             d.scores.size(), " entries for ", n, " tokens");
  spm_model.scores = d.scores;
  spm_model.byte_ids.fill(-1);
  spm_model.unk_id = d.unk_id;
  for (size_t i = 0; i < n; ++i) {
    const auto id = static_cast<int32_t>(i);
    const std::string& text = d.tokens[i];
    const TokenType t = type(id);
    if (t == TokenType::kByte) {
      // "<0xAB>"
      unsigned value = 0;
      QWEN_CHECK(text.size() == 6 && text.starts_with("<0x") && text[5] == '>' &&
                     std::sscanf(text.c_str() + 3, "%2x", &value) == 1,
                 src, ": token ", i, " '", text, "' is BYTE but not of the form <0xAB>");
      bytes[i] = std::string(1, static_cast<char>(value));
      spm_model.byte_ids[value] = id;
      continue;
    }
    if (t == TokenType::kNormal || t == TokenType::kUserDefined) {
      spm_model.pieces.try_emplace(text, id);
      // The visible space U+2581 stands for ' '.
      std::string out;
      for (size_t p = 0; p < text.size();) {
        if (std::string_view(text).substr(p).starts_with(spm::kSpace)) {
          out += ' ';
          p += spm::kSpace.size();
        } else {
          out += text[p++];
        }
      }
      bytes[i] = std::move(out);
    } else {
      bytes[i] = text;
    }
  }
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    if (const int32_t id = byte_token[static_cast<uint8_t>(piece[0])]; id >= 0) out.push_back(id);
    return;
  }
  if (ignore_merges) {
    auto it = normal_by_bytes.find(std::string(piece));
    if (it != normal_by_bytes.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kCachePieceMax;
  std::string key(cacheable ? piece : std::string_view());
  if (cacheable) {
    std::lock_guard lock(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols, ids;
  symbols.reserve(piece.size());
  for (unsigned char c : piece) {
    if (byte_token[c] >= 0) symbols.push_back(byte_token[c]);
  }
  if (!symbols.empty()) bpe::merge(merges, symbols, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (!cacheable) return;
  std::lock_guard lock(cache_mu);
  if (cache.size() >= kCacheMax) cache.clear();
  cache.emplace(std::move(key), std::move(ids));
}

void Tokenizer::Impl::encode_spm(std::string_view raw, std::vector<int32_t>& out) const {
  // As llama.cpp: every text fragment (the start, or text after a special token) gets the dummy
  // prefix when add_space_prefix is set, and spaces become "▁".
  std::string text;
  text.reserve(raw.size() + 16);
  if (d.add_space_prefix) text += spm::kSpace;
  for (char c : raw) {
    if (c == ' ') {
      text += spm::kSpace;
    } else {
      text += c;
    }
  }
  spm::encode(spm_model, text, out);
}

void Tokenizer::Impl::encode_text(std::string_view raw, std::vector<int32_t>& out, size_t max_tokens) const {
  if (raw.empty()) return;
  if (is_spm) {
    encode_spm(raw, out);
    return;
  }
  const std::string normalized = nfc ? unicode::nfc(raw) : std::string();
  const std::string_view text = nfc ? std::string_view(normalized) : raw;
  // Code points with their byte offsets (offsets[i] = start of code point i; offsets[n] = end).
  std::vector<uint32_t> cps, offsets;
  std::vector<uint8_t> flags;
  cps.reserve(text.size());
  offsets.reserve(text.size() + 1);
  flags.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    offsets.push_back(static_cast<uint32_t>(i));
    const uint32_t cp = unicode::next_cp(text, i);
    cps.push_back(cp);
    flags.push_back(unicode::cp_flags(cp));
  }
  offsets.push_back(static_cast<uint32_t>(text.size()));
  std::vector<uint32_t> ends;
  pretok::split(pre_kind, cps, flags, ends);
  uint32_t start = 0;
  for (uint32_t e : ends) {
    if (out.size() > max_tokens) return;
    encode_piece(text.substr(offsets[start], offsets[e] - offsets[start]), out);
    start = e;
  }
}

Tokenizer::Tokenizer(TokenizerData data) : impl_(std::make_unique<Impl>(std::move(data))) {}

namespace {

TokenizerData read_gguf(const gguf::File& f) {
  TokenizerData d;
  d.source = f.path();
  QWEN_CHECK(f.has("tokenizer.ggml.model"), f.path(),
             ": no tokenizer.ggml.model (not a model with a tokenizer)");
  d.model = f.get<std::string>("tokenizer.ggml.model");
  d.pre = f.get_or<std::string>("tokenizer.ggml.pre", "default");
  d.tokens = f.get<std::vector<std::string>>("tokenizer.ggml.tokens");
  d.token_types = f.get_or<std::vector<int32_t>>("tokenizer.ggml.token_type", {});
  d.scores = f.get_or<std::vector<float>>("tokenizer.ggml.scores", {});
  if (d.model == "gpt2") d.merges = f.get<std::vector<std::string>>("tokenizer.ggml.merges");
  auto id = [&](const char* key) {
    const std::string k = std::string("tokenizer.ggml.") + key;
    const int64_t v = f.get_or<int64_t>(k, -1);
    QWEN_CHECK(v >= -1 && v <= INT32_MAX, f.path(), ": ", k, " = ", v, " is not a token id");
    return static_cast<int32_t>(v);
  };
  d.bos_id = id("bos_token_id");
  d.eos_id = id("eos_token_id");
  d.eot_id = id("eot_token_id");
  d.eom_id = id("eom_token_id");
  d.pad_id = id("padding_token_id");
  d.unk_id = id("unknown_token_id");
  d.add_bos = f.get_or<bool>("tokenizer.ggml.add_bos_token", false);
  d.add_eos = f.get_or<bool>("tokenizer.ggml.add_eos_token", false);
  d.add_space_prefix = f.get_or<bool>("tokenizer.ggml.add_space_prefix", d.model == "llama");
  d.chat_template = f.get_or<std::string>("tokenizer.chat_template", "");
  return d;
}

}  // namespace

Tokenizer::Tokenizer(const gguf::File& file) : Tokenizer(read_gguf(file)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special, bool add_special,
                                       size_t max_tokens) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && m.d.add_bos) out.push_back(m.d.bos_id);
  const SpecialTrie& trie = parse_special ? m.all_added : m.user_added;
  if (trie.empty()) {
    m.encode_text(text, out, max_tokens);
  } else {
    // Added tokens split the text first; the pieces between them are tokenized independently.
    size_t start = 0, len = 0;
    int32_t id = -1;
    for (size_t i = 0; i < text.size(); ++i) {
      if (!trie.match(text, i, len, id)) continue;
      m.encode_text(text.substr(start, i - start), out, max_tokens);
      if (out.size() > max_tokens) return out;  // the fragment may have stopped short
      out.push_back(id);
      i += len - 1;
      start = i + 1;
    }
    if (out.size() > max_tokens) return out;
    m.encode_text(text.substr(start), out, max_tokens);
  }
  if (add_special && m.d.add_eos) out.push_back(m.d.eos_id);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  bool at_start = true;
  for (int32_t id : ids) {
    const TokenType t = token_type(id);
    if (skip_special && t == TokenType::kControl) continue;
    const std::string& piece = impl_->bytes[id];
    // SentencePiece models drop the dummy-prefix space of the first piece, as sentencepiece does.
    if (at_start && strips_leading_space() && t == TokenType::kNormal && piece.starts_with(' ')) {
      out.append(piece, 1);
    } else {
      out += piece;
    }
    if (t != TokenType::kControl) at_start = false;
  }
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  QWEN_CHECK(id >= 0 && id < n_vocab(), "token id ", id, " is outside the vocabulary of ", n_vocab());
  return impl_->bytes[id];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  QWEN_CHECK(id >= 0 && id < n_vocab(), "token id ", id, " is outside the vocabulary of ", n_vocab());
  return impl_->d.tokens[id];
}

TokenType Tokenizer::token_type(int32_t id) const {
  QWEN_CHECK(id >= 0 && id < n_vocab(), "token id ", id, " is outside the vocabulary of ", n_vocab());
  return impl_->type(id);
}

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const {
  auto it = impl_->by_text.find(std::string(text));
  if (it == impl_->by_text.end()) return std::nullopt;
  return it->second;
}

int32_t Tokenizer::n_vocab() const {
  return static_cast<int32_t>(impl_->d.tokens.size());
}
int32_t Tokenizer::bos() const {
  return impl_->d.bos_id;
}
int32_t Tokenizer::eos() const {
  return impl_->d.eos_id;
}
bool Tokenizer::add_bos() const {
  return impl_->d.add_bos;
}
bool Tokenizer::add_eos() const {
  return impl_->d.add_eos;
}
bool Tokenizer::strips_leading_space() const {
  return impl_->is_spm && impl_->d.add_space_prefix;
}
const std::vector<int32_t>& Tokenizer::eog_ids() const {
  return impl_->eog;
}
bool Tokenizer::is_eog(int32_t id) const {
  return std::binary_search(impl_->eog.begin(), impl_->eog.end(), id);
}
const std::string& Tokenizer::model() const {
  return impl_->d.model;
}
const std::string& Tokenizer::pre() const {
  return impl_->d.pre;
}
const std::string& Tokenizer::chat_template_source() const {
  return impl_->d.chat_template;
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  const TokenType t = tok_->token_type(id);
  if (skip_special_ && t == TokenType::kControl) return {};
  const std::string piece = tok_->token_bytes(id);
  if (first_ && tok_->strips_leading_space() && t == TokenType::kNormal && piece.starts_with(' ')) {
    pending_.append(piece, 1);
  } else {
    pending_ += piece;
  }
  if (t != TokenType::kControl) first_ = false;
  const size_t ready = unicode::complete_utf8_prefix(pending_);
  // Bytes that can never become valid are shown as U+FFFD rather than passed through broken.
  std::string out = unicode::sanitize_utf8(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = unicode::sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace qwen
