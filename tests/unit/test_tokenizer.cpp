// Tokenizer units on small hand-made vocabularies: BPE merge order, special tokens, invalid UTF-8,
// the streaming decoder, NFC, pre-tokenizer splits, EOG ids, validation errors and chat template
// selection. (Parity with HF tokenizers on the real vocabulary is tests/python/test_tokenizer_parity.py.)
// Every check is exact (ids, bytes, strings): tolerance none.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/check.h"

namespace qwen {
namespace {

// Byte-level token text of raw bytes.
std::string bl(std::string_view raw) {
  std::string out;
  for (unsigned char c : raw) unicode::append_utf8(out, bpe::byte_to_cp()[c]);
  return out;
}

// 256 byte tokens (ids 0..255), then `extra` normal tokens, merges, then added tokens.
TokenizerData tiny(const std::vector<std::string>& extra,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   const std::vector<std::pair<std::string, TokenType>>& added = {}) {
  TokenizerData d;
  d.pre = "qwen2";
  for (int b = 0; b < 256; ++b) d.tokens.push_back(bl(std::string(1, static_cast<char>(b))));
  for (const auto& e : extra) d.tokens.push_back(bl(e));
  d.token_types.assign(d.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  for (const auto& [l, r] : merges) d.merges.push_back(bl(l) + " " + bl(r));
  for (const auto& [text, type] : added) {
    d.tokens.push_back(text);
    d.token_types.push_back(static_cast<int32_t>(type));
  }
  return d;
}

int32_t byte_id(char c) {
  return static_cast<unsigned char>(c);
}

TEST(TokenizerBpe, LowestRankMergesFirst) {
  // "abc": (b,c) has rank 0, (a,b) rank 1, so b+c merges first and a stays alone.
  Tokenizer tok(tiny({"ab", "bc"}, {{"b", "c"}, {"a", "b"}}));
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{byte_id('a'), 257}));
  // Same merges, other priority: a+b first.
  Tokenizer tok2(tiny({"ab", "bc"}, {{"a", "b"}, {"b", "c"}}));
  EXPECT_EQ(tok2.encode("abc"), (std::vector<int32_t>{256, byte_id('c')}));
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirstAndChain) {
  // "aaaaa" with a+a (rank 0) and aa+aa (rank 1): aa aa a, then aaaa a.
  Tokenizer tok(tiny({"aa", "aaaa"}, {{"a", "a"}, {"aa", "aa"}}));
  EXPECT_EQ(tok.encode("aaaaa"), (std::vector<int32_t>{257, byte_id('a')}));
  EXPECT_EQ(tok.encode("aaa"), (std::vector<int32_t>{256, byte_id('a')}));
  // The cache must give the same answer the second time.
  EXPECT_EQ(tok.encode("aaaaa aaaaa"),
            (std::vector<int32_t>{257, byte_id('a'), byte_id(' '), 257, byte_id('a')}));
}

TEST(TokenizerSpecial, ControlOnlyWithParseSpecialUserDefinedAlways) {
  Tokenizer tok(tiny({}, {}, {{"<|end|>", TokenType::kControl}, {"<u>", TokenType::kUserDefined}}));
  const int32_t end = 256, u = 257;
  EXPECT_EQ(tok.encode("x<|end|>", true), (std::vector<int32_t>{byte_id('x'), end}));
  const auto plain = tok.encode("x<|end|>", false);
  EXPECT_EQ(plain.size(), 8u);  // one byte token per character
  EXPECT_EQ(tok.decode(plain), "x<|end|>");
  EXPECT_EQ(tok.encode("a<u>b", false), (std::vector<int32_t>{byte_id('a'), u, byte_id('b')}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{byte_id('a'), end, u}, /*skip_special=*/true), "a<u>");
  EXPECT_EQ(tok.eog_ids(), (std::vector<int32_t>{end}));  // <|end|> is a control end-of-turn text
  EXPECT_TRUE(tok.is_eog(end));
  EXPECT_FALSE(tok.is_eog(u));
}

TEST(TokenizerSpecial, LongestMatchWins) {
  Tokenizer tok(tiny({}, {}, {{"<a>", TokenType::kControl}, {"<a>b", TokenType::kControl}}));
  EXPECT_EQ(tok.encode("<a>b<a>", true), (std::vector<int32_t>{257, 256}));
}

TEST(TokenizerBytes, InvalidUtf8RoundTrips) {
  Tokenizer tok(tiny({}, {}));
  const std::string s = "ok \xff\xfe\xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 end\xc3";
  EXPECT_EQ(tok.decode(tok.encode(s)), s);
}

TEST(TokenizerBytes, AddSpecialUsesModelFlags) {
  TokenizerData d = tiny({}, {}, {{"<s>", TokenType::kControl}});
  d.bos_id = 256;
  d.add_bos = true;
  Tokenizer tok(std::move(d));
  EXPECT_EQ(tok.encode("a", false, true), (std::vector<int32_t>{256, byte_id('a')}));
  EXPECT_EQ(tok.encode("a", false, false), (std::vector<int32_t>{byte_id('a')}));
}

// max_tokens stops tokenizing once more ids than that are out. Metric (exact): the result is a
// prefix of the full encoding, longer than max_tokens by at most one pre-tokenizer piece's ids
// (here one word: its characters, no merges), with or without special tokens in the text.
TEST(TokenizerBytes, MaxTokensStopsEarly) {
  Tokenizer tok(tiny({}, {}, {{"<|end|>", TokenType::kControl}}));
  const std::string text = "one two three<|end|>four five six seven";
  for (bool parse_special : {false, true}) {
    const auto full = tok.encode(text, parse_special);
    for (size_t limit : {size_t(0), size_t(5), size_t(14), size_t(20)}) {
      const auto cut = tok.encode(text, parse_special, false, limit);
      ASSERT_GT(cut.size(), limit) << limit;
      EXPECT_LE(cut.size(), limit + 6) << limit;  // the longest piece: " seven" (6 bytes)
      EXPECT_TRUE(std::equal(cut.begin(), cut.end(), full.begin())) << limit;
    }
    EXPECT_EQ(tok.encode(text, parse_special, false, full.size()), full);
  }
}

TEST(StreamDecoder, HoldsBackSplitCharacters) {
  Tokenizer tok(tiny({}, {}, {{"<|im_end|>", TokenType::kControl}}));
  const std::string text = "é中👍x";
  StreamDecoder dec(tok);
  std::string out;
  for (int32_t id : tok.encode(text)) {
    const std::string piece = dec.push(id);
    // Every emitted piece is complete UTF-8.
    EXPECT_EQ(unicode::complete_utf8_prefix(piece), piece.size());
    EXPECT_EQ(unicode::sanitize_utf8(piece), piece);
    out += piece;
  }
  EXPECT_EQ(dec.push(256), "");  // control token skipped
  out += dec.flush();
  EXPECT_EQ(out, text);
  // "中" is E4 B8 AD: nothing comes out until the third byte.
  StreamDecoder d2(tok);
  EXPECT_EQ(d2.push(0xE4), "");
  EXPECT_EQ(d2.push(0xB8), "");
  EXPECT_EQ(d2.push(0xAD), "中");
  // A sequence that never completes is shown as U+FFFD at the end; an impossible one at once.
  EXPECT_EQ(d2.push(0xF0), "");
  EXPECT_EQ(d2.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(d2.push(0xFF), "\xEF\xBF\xBD");
  EXPECT_EQ(d2.push(0xE0), "");
  EXPECT_EQ(d2.push(0x80), "\xEF\xBF\xBD\xEF\xBF\xBD");  // E0 80 can never be valid
}

TEST(Unicode, Nfc) {
  EXPECT_EQ(unicode::nfc("e\xCC\x81"), "\xC3\xA9");                                 // e + U+0301 -> é
  EXPECT_EQ(unicode::nfc("\xE2\x84\xAB"), "\xC3\x85");                              // U+212B -> U+00C5
  EXPECT_EQ(unicode::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo -> 각
  EXPECT_EQ(unicode::nfc("a\xCC\x82\xCC\xA3"), "\xE1\xBA\xAD");                     // reordered, then ậ
  EXPECT_EQ(unicode::nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(unicode::nfc("\xCC\x81"
                         "a"),
            "\xCC\x81"
            "a");                                             // leading mark stays
  EXPECT_EQ(unicode::nfc("x\xff\xCC\x81"), "x\xff\xCC\x81");  // invalid byte blocks
}

TEST(Unicode, Classes) {
  EXPECT_TRUE(unicode::is_letter(U'é'));
  EXPECT_TRUE(unicode::is_letter(0x4E2D));
  EXPECT_TRUE(unicode::is_number(0x0663));  // ARABIC-INDIC DIGIT THREE
  EXPECT_TRUE(unicode::is_number(0x00BD));  // ½ is No
  EXPECT_TRUE(unicode::is_space(0x3000));
  EXPECT_FALSE(unicode::is_space(0x1C));    // Python isspace() but not \s
  EXPECT_FALSE(unicode::is_space(0x200B));  // ZERO WIDTH SPACE is Cf
  EXPECT_EQ(unicode::cp_flags(unicode::kInvalidBase + 0xFF), 0);
}

std::vector<std::string> pieces(pretok::Kind kind, std::string_view text) {
  std::vector<uint32_t> cps, offsets;
  std::vector<uint8_t> flags;
  for (size_t i = 0; i < text.size();) {
    offsets.push_back(static_cast<uint32_t>(i));
    cps.push_back(unicode::next_cp(text, i));
    flags.push_back(unicode::cp_flags(cps.back()));
  }
  offsets.push_back(static_cast<uint32_t>(text.size()));
  std::vector<uint32_t> ends;
  pretok::split(kind, cps, flags, ends);
  std::vector<std::string> out;
  uint32_t start = 0;
  for (uint32_t e : ends) {
    out.emplace_back(text.substr(offsets[start], offsets[e] - offsets[start]));
    start = e;
  }
  return out;
}

using Pieces = std::vector<std::string>;

TEST(PreTokenizer, Qwen2MatchesHf) {
  // Expected splits are what HF tokenizers' pre_tokenize_str gives with the Qwen2 tokenizer.json.
  EXPECT_EQ(pieces(pretok::Kind::kQwen2, "Hello  world\n\n x"),
            (Pieces{"Hello", " ", " world", "\n\n", " x"}));
  EXPECT_EQ(pieces(pretok::Kind::kQwen2, "it'S 1234 ab,cd!\r\n"),
            (Pieces{"it", "'S", " ", "1", "2", "3", "4", " ab", ",cd", "!\r\n"}));
  EXPECT_EQ(pieces(pretok::Kind::kQwen2, "  \t x\t\ty "), (Pieces{"  \t", " x", "\t", "\ty", " "}));
  EXPECT_EQ(pieces(pretok::Kind::kQwen2, "中文ab 12"), (Pieces{"中文ab", " ", "1", "2"}));
  EXPECT_EQ(pieces(pretok::Kind::kQwen2, "'\u017Fx"), (Pieces{"'\u017F", "x"}));  // (?i) 's matches ſ
}

TEST(PreTokenizer, OtherKinds) {
  EXPECT_EQ(pieces(pretok::Kind::kLlama3, "x 1234567"), (Pieces{"x", " ", "123", "456", "7"}));
  EXPECT_EQ(pieces(pretok::Kind::kGpt2, "it'S  12 x"), (Pieces{"it", "'", "S", " ", " 12", " x"}));
  // smollm: digits are split first, so the space run before a digit is a whole piece.
  EXPECT_EQ(pieces(pretok::Kind::kSmollm, "a   12b"), (Pieces{"a", "   ", "1", "2", "b"}));
  EXPECT_THROW(pretok::from_name("falcon", "test.gguf"), Error);
}

TEST(TokenizerValidation, ErrorsNameTheField) {
  auto expect_error = [](TokenizerData d, const std::string& needle) {
    try {
      Tokenizer tok(std::move(d));
      ADD_FAILURE() << "no error, expected one mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TokenizerData d = tiny({}, {});
  d.token_types.pop_back();
  expect_error(d, "token_type");
  d = tiny({}, {});
  d.merges.push_back("nospace");
  expect_error(d, "merges[0]");
  d = tiny({}, {{"a", "b"}});  // merged token "ab" is not in the vocabulary
  expect_error(d, "merges[0]");
  d = tiny({}, {});
  d.eos_id = 999;
  expect_error(d, "eos_token_id");
  d = tiny({}, {});
  d.model = "bert";
  expect_error(d, "tokenizer.ggml.model 'bert'");
  d = tiny({}, {});
  d.model = "llama";  // SentencePiece needs scores
  expect_error(d, "tokenizer.ggml.scores");
  d = tiny({}, {});
  d.pre = "unknown-pre";
  expect_error(d, "unknown-pre");
  d = tiny({}, {});
  d.tokens.erase(d.tokens.begin(), d.tokens.begin() + 200);
  d.token_types.erase(d.token_types.begin(), d.token_types.begin() + 200);
  expect_error(d, "only 56 of the 256 bytes");
}

TEST(TokenizerBytes, BytesWithoutTokenAreDropped) {
  // As HF tokenizers (BPE, no unk) does: a byte the vocabulary cannot represent disappears, and
  // its neighbours still merge.
  TokenizerData d = tiny({"!?"}, {{"!", "?"}});
  d.tokens[4] = "[PAD4]";  // byte 0x04 has no token now
  d.token_types[4] = static_cast<int32_t>(TokenType::kUnused);
  Tokenizer tok(std::move(d));
  EXPECT_EQ(tok.encode("!\x04?"), (std::vector<int32_t>{256}));  // one pre-token "!\x04?"
}

// SentencePiece-style model: pieces with scores, "▁" for spaces, <0xAB> byte fallback.
TEST(TokenizerSpm, MergesByScoreWithByteFallback) {
  TokenizerData d;
  d.model = "llama";
  const std::vector<std::pair<std::string, float>> pieces = {
      {"<unk>", 0}, {"<s>", 0}, {"▁", -1}, {"a", -2}, {"b", -3}, {"▁a", -4}, {"ab", -5}, {"▁ab", -6}};
  for (const auto& [text, score] : pieces) {
    d.tokens.push_back(text);
    d.scores.push_back(score);
    d.token_types.push_back(static_cast<int32_t>(TokenType::kNormal));
  }
  d.token_types[0] = static_cast<int32_t>(TokenType::kUnknown);
  d.token_types[1] = static_cast<int32_t>(TokenType::kControl);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    d.tokens.push_back(name);
    d.scores.push_back(0);
    d.token_types.push_back(static_cast<int32_t>(TokenType::kByte));
  }
  d.unk_id = 0;
  d.bos_id = 1;
  Tokenizer tok(std::move(d));
  // "▁ab": ▁+a (score -4) beats a+b (-5), then ▁a+b -> ▁ab (-6).
  EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{7}));
  // "é" has no piece: its two UTF-8 bytes become byte tokens (ids 8 + byte).
  EXPECT_EQ(tok.encode("é"), (std::vector<int32_t>{2, 8 + 0xC3, 8 + 0xA9}));
  EXPECT_EQ(tok.decode(tok.encode("ab a")), "ab a");  // dummy prefix dropped again
  StreamDecoder dec(tok);
  std::string streamed;
  for (int32_t id : tok.encode("é ab")) streamed += dec.push(id);
  EXPECT_EQ(streamed + dec.flush(), "é ab");
}

TEST(ChatTemplate, SourceNamesAndErrors) {
  // A GGUF template is run as written by the Jinja engine, with bos_token / eos_token.
  const auto custom = ChatTemplate::from_source(
      "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}", "<s>", "</s>");
  EXPECT_EQ(custom.family(), ChatFamily::kJinja);
  EXPECT_STREQ(custom.name(), "jinja");
  EXPECT_EQ(custom.render({{"user", "a"}, {"assistant", "b"}}, true), "<s>ab</s>");
  try {
    ChatTemplate::from_source("ok\n{% for m in messages %}{{ m.content | wordwrap }}{% endfor %}", "");
    ADD_FAILURE() << "unsupported filter accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--chat-template"), std::string::npos) << what;
    EXPECT_NE(what.find("line 2"), std::string::npos) << what;
    EXPECT_NE(what.find("wordwrap"), std::string::npos) << what;
  }
  EXPECT_THROW(ChatTemplate::from_source("", ""), Error);
  EXPECT_THROW(ChatTemplate::from_name("llama3.1", "")
                   .render({{"user", "u"}}, true, nlohmann::json{{"date_string", 1}}),
               Error);
  EXPECT_THROW(ChatTemplate::from_name("vicuna", ""), Error);
  const auto gemma = ChatTemplate::from_name("gemma", "<bos>");
  EXPECT_THROW(gemma.render({{"assistant", "a"}}, true), Error);
  EXPECT_EQ(gemma.render({{"user", " hi "}}, true),
            "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n");
  const auto qwen3 = ChatTemplate::from_name("qwen3", "");
  EXPECT_EQ(qwen3.render({{"user", "q"}}, true, nlohmann::json{{"enable_thinking", false}}),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_THROW(qwen3.render(std::vector<ChatMessage>{}, true), Error);
  EXPECT_THROW(qwen3.render({{"user", "q"}}, true, nlohmann::json{{"tools", {1}}}), Error);
  // Built-in templates render role and content only: tool calls need the model's own template.
  const auto calls = nlohmann::ordered_json::parse(
      R"([{"role": "assistant", "content": null, "tool_calls": [{"type": "function"}]}])");
  EXPECT_THROW(qwen3.render(calls, true, nlohmann::ordered_json::object()), Error);
}

}  // namespace
}  // namespace qwen
