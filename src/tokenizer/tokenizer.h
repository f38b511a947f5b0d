// Tokenizer loaded from GGUF metadata (tokenizer.ggml.*): byte-level BPE ("gpt2") with the
// pre-tokenizers qwen2 / llama-bpe / smollm / gpt2, SentencePiece-style BPE ("llama") with scores
// and byte fallback, special tokens, end-of-generation ids, a streaming detokenizer and chat
// template rendering. Ids are meant to equal the HF `tokenizers` library on the same vocabulary.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace qwen::gguf {
class File;
}

namespace qwen {

// GGUF `tokenizer.ggml.token_type` values (same numbering as llama.cpp / gguf-py TokenType).
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // special tokens (<|im_start|>): matched in text only with parse_special
  kUserDefined = 4,  // added tokens (<think>): always matched in text, as HF does
  kUnused = 5,
  kByte = 6,  // <0xAB> byte-fallback tokens of SentencePiece models
};

// Everything the tokenizer needs, as read from GGUF. Public so tests and tools can build a
// tokenizer without a file; Tokenizer's constructor validates it (sizes agree, ids in range).
struct TokenizerData {
  std::string model = "gpt2";        // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SPM)
  std::string pre = "default";       // tokenizer.ggml.pre: qwen2, llama-bpe, smollm, gpt2, default
  std::vector<std::string> tokens;   // [n_vocab] token text (byte-level alphabet for gpt2)
  std::vector<int32_t> token_types;  // [n_vocab] TokenType values; empty = all kNormal
  std::vector<float> scores;         // [n_vocab] SPM merge scores; empty for gpt2
  std::vector<std::string> merges;   // gpt2 only: "left right" in rank order (rank = index)
  int32_t bos_id = -1, eos_id = -1, eot_id = -1, eom_id = -1, pad_id = -1, unk_id = -1;
  bool add_bos = false, add_eos = false;
  bool add_space_prefix = true;     // llama (SPM) only: "▁" dummy prefix before each text fragment
  std::string chat_template;        // tokenizer.chat_template (Jinja source), may be empty
  std::string source = "<memory>";  // named in error messages (the GGUF path)
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* and tokenizer.chat_template from `file`; throws qwen::Error naming the
  // file and the missing / inconsistent key.
  explicit Tokenizer(const gguf::File& file);
  explicit Tokenizer(TokenizerData data);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Text (UTF-8) to ids. Invalid UTF-8 bytes are kept: each is a non-letter, non-digit,
  // non-space character of its own, encoded by its byte token, so decode(encode(s)) round-trips.
  // parse_special: control tokens written in the text (e.g. "<|im_end|>" from a rendered chat
  // template) become their ids; otherwise they are tokenized as plain text. User-defined added
  // tokens are always matched, as in HF tokenizers. add_special: prepend BOS / append EOS when the
  // GGUF says add_bos_token / add_eos_token.
  // max_tokens: stop once more than that many ids are out, so that a text too long for a context
  // costs only what fits (a server's length check); the result then holds more than max_tokens
  // ids but not the whole text. Checked after each pre-tokenizer piece (byte-level BPE) or each
  // fragment between special tokens (SentencePiece, which has no pre-tokenizer).
  std::vector<int32_t> encode(std::string_view text, bool parse_special = false, bool add_special = false,
                              size_t max_tokens = SIZE_MAX) const;

  // Ids to bytes (not necessarily valid UTF-8 when cut mid-character). skip_special drops control
  // tokens. Throws qwen::Error on an id outside [0, n_vocab).
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The bytes one token stands for (byte-level alphabet undone, SPM "▁" as space, <0xAB> as a byte).
  std::string token_bytes(int32_t id) const;
  // The raw vocabulary string of a token, as stored in GGUF.
  const std::string& token_text(int32_t id) const;
  TokenType token_type(int32_t id) const;
  std::optional<int32_t> find_token(std::string_view text) const;

  int32_t n_vocab() const;
  int32_t bos() const;  // -1 when the model has none
  int32_t eos() const;  // -1 when the model has none
  bool add_bos() const;
  bool add_eos() const;
  // SentencePiece models with add_space_prefix: the first piece's leading space is the dummy
  // prefix, dropped when decoding from the start of a text.
  bool strips_leading_space() const;
  // End-of-generation ids: eos, eot, eom and the control tokens that end a turn or a document
  // (<|im_end|>, <|endoftext|>, <|eot_id|>, <end_of_turn>, ...). Sorted, unique.
  const std::vector<int32_t>& eog_ids() const;
  bool is_eog(int32_t id) const;

  const std::string& model() const;                 // "gpt2" or "llama"
  const std::string& pre() const;                   // pre-tokenizer name
  const std::string& chat_template_source() const;  // may be empty

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Turns a stream of ids into text that is always complete UTF-8: bytes of a character split
// across tokens are held back until the character is complete.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
  // Returns the text that became complete with this token (possibly empty).
  std::string push(int32_t id);
  // End of stream: returns held-back bytes that never completed, each invalid byte as U+FFFD.
  std::string flush();

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  bool first_ = true;  // no text piece seen yet (see Tokenizer::strips_leading_space)
  std::string pending_;
};

// ---- chat templates ---------------------------------------------------------------------------

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (others where the template allows them)
  std::string content;
};

namespace jinja {
class Template;
}

// Built-in template families, rendered by hand-written code that reproduces their Jinja templates
// byte for byte: the fallbacks picked by name with --chat-template NAME.
enum class ChatFamily {
  kJinja,    // not a built-in: the model's own template run by the Jinja engine (jinja.h)
  kChatML,   // <|im_start|>role\n...<|im_end|>\n (Qwen2, Qwen2.5, SmolLM), optional default system
  kQwen3,    // ChatML with <think> handling and enable_thinking
  kLlama3,   // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> (Llama 3.0)
  kLlama31,  // Llama 3.1 / 3.2: Llama 3 plus a dated system header (no tool calling)
  kGemma,    // <start_of_turn>user\n...<end_of_turn>\n, "model" role (Gemma 2 and 3)
};

class ChatTemplate {
 public:
  // A Jinja template source (tokenizer.chat_template), parsed by the Jinja engine; rendering runs
  // it as transformers does. Throws qwen::Error naming the template line of a syntax error or of
  // a construct the engine does not implement, and that --chat-template NAME picks a built-in one.
  static ChatTemplate from_source(std::string_view jinja_source, std::string bos_token,
                                  std::string eos_token = {});
  // Built-in templates by name: "chatml" (no default system prompt), "qwen2" and "qwen2.5"
  // (ChatML with their default system prompts), "qwen3", "llama3", "llama3.1" (date "26 Jul 2024"),
  // "llama3.2" (today's date), "gemma" (Gemma 3); throws listing the valid names. Llama 3.1+
  // take the variable date_string like the templates do. They render role and content only.
  static ChatTemplate from_name(std::string_view name, std::string bos_token);
  // Uses `forced_name` when non-empty, else the tokenizer's tokenizer.chat_template. The BOS and
  // EOS texts come from the tokenizer (templates write {{ bos_token }} and {{ eos_token }}).
  static ChatTemplate for_tokenizer(const Tokenizer& tok, std::string_view forced_name = {});

  // Renders like transformers' apply_chat_template(messages, add_generation_prompt, **vars).
  // `vars` is a JSON object of extra template variables (e.g. {"enable_thinking": false}, "tools").
  // Conversations the template rejects (raise_exception) throw qwen::Error with its message.
  // The result is meant to be encoded with parse_special = true and add_special = false.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const nlohmann::json& vars) const;
  // Messages as JSON objects, with whatever fields the template reads besides role and content
  // (tool_calls, tool_call_id, name, reasoning_content). Objects keep their key order, which
  // tojson prints. A built-in template takes role and string content only and refuses the rest.
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& vars) const;

  ChatFamily family() const { return family_; }
  // "jinja" for the model's own template, else the built-in name as accepted by from_name.
  const char* name() const;

 private:
  ChatTemplate() = default;
  ChatFamily family_ = ChatFamily::kChatML;
  std::shared_ptr<const jinja::Template> jinja_;  // kJinja
  std::string default_system_;     // ChatML: system prompt used when the first turn is not system
  bool tool_responses_ = false;    // ChatML (Qwen2.5): "tool" turns wrapped in <tool_response>
  bool gemma_fold_system_ = true;  // Gemma 3 folds a system turn into the first user turn; Gemma 2 rejects it
  bool llama_date_now_ = false;    // Llama 3.2: the default date_string is today (strftime_now)
  std::string bos_token_, eos_token_;
};

}  // namespace qwen
