// qwen-tokenize: the model's tokenizer on plain text or JSON Lines.
//   qwen-tokenize -m MODEL (-p TEXT | -f FILE | --stdin) [--ids] [--special] [--add-special]
//       one text (as llama-tokenize): a line per token, "id -> 'piece'"; --ids prints [id, ...]
//   qwen-tokenize -m MODEL [--special] [--add-special] < strings.jsonl    one JSON array of ids per line
//   qwen-tokenize -m MODEL --decode [--skip-special] < ids.jsonl          one JSON string per line
//   qwen-tokenize -m MODEL --chat FILE.json [--chat-template NAME | --chat-template-file JINJA]
//                 [--vars JSON] [--no-generation-prompt]
//       FILE.json: a messages array [{"role": ..., "content": ...}], or an object {"messages": [...],
//       "add_generation_prompt": bool, other keys = template variables}. FILE "-" reads one such
//       conversation per line from stdin. Prints {"template", "text", "ids"} per conversation, or
//       {"error": message} for one the template rejects (stdin mode goes on with the next line).
//   qwen-tokenize -m MODEL --bench N < strings.jsonl
//       encodes the input N times on one thread and reports MB/s on stderr.
//   qwen-tokenize -m MODEL --info    tokenizer summary (model, pre, vocab, specials, EOG, template)
#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace {

using nlohmann::json;
using nlohmann::ordered_json;

std::string ids_json(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(ids[i]);
  }
  return s + "]";
}

// Decoded bytes may be cut mid-character: invalid UTF-8 is written as U+FFFD.
std::string string_json(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

// J: json, or ordered_json where key order matters (chat templates print objects with tojson).
template <class J = json, class F>
void for_each_line(std::istream& in, F&& f) {
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    J v;
    try {
      v = J::parse(line);
    } catch (const json::exception& e) {
      QWEN_FAIL("stdin line ", n, " is not JSON (", e.what(),
                "); without -p, -f or --stdin the input is JSON Lines: use --stdin for plain text");
    }
    f(v, n);
  }
}

void render_chat(const qwen::Tokenizer& tok, const qwen::ChatTemplate& tmpl, const ordered_json& conv,
                 bool add_gen, const ordered_json& vars) {
  ordered_json all_vars = vars;
  ordered_json messages = conv;
  if (conv.is_object()) {
    QWEN_CHECK(conv.contains("messages"), "chat: conversation object has no \"messages\"");
    messages = conv["messages"];
    for (const auto& [k, v] : conv.items()) {
      if (k == "add_generation_prompt") {
        QWEN_CHECK(v.is_boolean(), "chat: add_generation_prompt must be a boolean");
        add_gen = v.get<bool>();
      } else if (k != "messages") {
        all_vars[k] = v;
      }
    }
  }
  QWEN_CHECK(messages.is_array(), "chat: messages must be an array, got ", messages.type_name());
  const std::string text = tmpl.render(messages, add_gen, all_vars);
  const auto ids = tok.encode(text, /*parse_special=*/true);
  std::cout << "{\"template\": \"" << tmpl.name() << "\", \"text\": " << string_json(text)
            << ", \"ids\": " << ids_json(ids) << "}\n";
}

// A token's bytes as a quoted literal: printable ASCII and complete UTF-8 as is, control bytes and
// bytes of a character split across tokens as \xNN (\n, \t, \r, \\ and \' spelled out).
std::string piece_literal(const std::string& bytes) {
  std::string out = "'";
  for (size_t i = 0; i < bytes.size();) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool whole = len > 1 && i + len <= bytes.size();
    for (size_t k = 1; whole && k < len; ++k) whole = (static_cast<unsigned char>(bytes[i + k]) >> 6) == 0x2;
    if (whole) {
      out.append(bytes, i, len);
      i += len;
      continue;
    }
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\'':
        out += "\\'";
        break;
      default:
        if (c >= 0x20 && c < 0x7F) {
          out += char(c);
        } else {
          char hex[5];
          std::snprintf(hex, sizeof hex, "\\x%02X", c);
          out += hex;
        }
    }
    ++i;
  }
  return out + "'";
}

void print_tokens(const qwen::Tokenizer& tok, const std::vector<int32_t>& ids, bool ids_only) {
  if (ids_only) {
    std::cout << ids_json(ids) << "\n";
    return;
  }
  for (int32_t id : ids)
    std::cout << std::setw(6) << id << " -> " << piece_literal(tok.token_bytes(id)) << "\n";
}

void info(const qwen::Tokenizer& tok) {
  json eog = json::array();
  for (int32_t id : tok.eog_ids()) eog.push_back({{"id", id}, {"text", tok.token_text(id)}});
  json j = {{"model", tok.model()},
            {"pre", tok.pre()},
            {"n_vocab", tok.n_vocab()},
            {"bos", tok.bos()},
            {"eos", tok.eos()},
            {"add_bos", tok.add_bos()},
            {"eog", eog},
            {"chat_template", tok.chat_template_source().empty() ? "" : "present"}};
  if (!tok.chat_template_source().empty()) {
    try {
      j["chat_template"] = qwen::ChatTemplate::for_tokenizer(tok).name();
    } catch (const qwen::Error& e) {
      j["chat_template"] = std::string("unusable: ") + e.what();
    }
  }
  std::cout << j.dump(2) << "\n";
}

void bench(const qwen::Tokenizer& tok, int reps, bool special) {
  std::vector<std::string> texts;
  size_t bytes = 0;
  for_each_line(std::cin, [&](const json& v, size_t n) {
    QWEN_CHECK(v.is_string(), "stdin line ", n, ": expected a JSON string");
    texts.push_back(v.get<std::string>());
    bytes += texts.back().size();
  });
  size_t tokens = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) {
    for (const auto& t : texts) tokens += tok.encode(t, special).size();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mb = static_cast<double>(bytes) * reps / 1e6;
  std::cerr << "encode: " << texts.size() << " strings, " << mb << " MB, " << tokens << " tokens in " << s
            << " s: " << mb / s << " MB/s, " << tokens / s / 1e6 << " Mtok/s (1 thread)\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-tokenize: encode / decode JSON Lines and render chats with a GGUF model's tokenizer"};
  app.option_defaults()->always_capture_default();
  std::string model, chat_file, chat_template, chat_template_file, vars_text = "{}", prompt, prompt_file;
  bool decode = false, special = false, add_special = false, skip_special = false, no_gen = false,
       show_info = false, from_stdin = false, ids_only = false, verbose = false;
  int bench_reps = 0;
  app.add_option("-m,--model", model, "GGUF file (only its tokenizer metadata is read)")->required();
  auto* p_opt =
      app.add_option("-p,--prompt", prompt, "tokenize this text: one line per token, id -> 'piece'");
  auto* f_opt = app.add_option("-f,--file", prompt_file, "tokenize the text of this file, as -p");
  auto* s_opt = app.add_flag("--stdin", from_stdin, "tokenize all of stdin as one plain text, as -p");
  p_opt->excludes(f_opt)->excludes(s_opt);
  f_opt->excludes(s_opt);
  app.add_flag("--ids", ids_only, "-p / -f / --stdin: print only the ids, as [1, 2, 3]");
  app.add_flag("--verbose", verbose, "errors also name the source location that raised them");
  app.add_flag("--decode", decode, "ids -> text instead of text -> ids");
  app.add_flag("--special", special, "match control tokens (<|im_start|> ...) written in the text");
  app.add_flag("--add-special", add_special, "add BOS/EOS as the model's add_bos_token/add_eos_token say");
  app.add_flag("--skip-special", skip_special, "--decode: drop control tokens");
  app.add_option("--chat", chat_file, "render a conversation (JSON file, or - for JSON Lines on stdin)");
  app.add_option("--chat-template", chat_template,
                 "force a built-in template: chatml, qwen2, qwen2.5, qwen3, "
                 "llama3, gemma");
  app.add_option("--chat-template-file", chat_template_file,
                 "use this Jinja template instead of the model's (its family is detected)")
      ->excludes("--chat-template");
  app.add_option("--vars", vars_text,
                 "extra template variables as a JSON object, e.g. '{\"enable_thinking\": false}'");
  app.add_flag("--no-generation-prompt", no_gen, "do not append the assistant turn header");
  app.add_option("--bench", bench_reps, "encode stdin N times and report throughput")
      ->check(CLI::PositiveNumber);
  app.add_flag("--info", show_info, "print a tokenizer summary");
  for (const char* other : {"--decode", "--chat", "--bench", "--info"}) {
    for (CLI::Option* text : {p_opt, f_opt, s_opt}) text->excludes(other);
  }
  CLI11_PARSE(app, argc, argv);
  const bool plain_text = !prompt.empty() || !prompt_file.empty() || from_stdin;

  try {
    std::ios::sync_with_stdio(false);
    const auto file = qwen::gguf::File::open(model);
    const qwen::Tokenizer tok(*file);
    if (plain_text) {
      std::stringstream text;
      if (!prompt_file.empty()) {
        std::ifstream in(prompt_file, std::ios::binary);
        QWEN_CHECK(in, "-f: cannot open ", prompt_file);
        text << in.rdbuf();
      } else if (from_stdin) {
        text << std::cin.rdbuf();
      } else {
        text << prompt;
      }
      print_tokens(tok, tok.encode(text.str(), special, add_special), ids_only);
    } else if (show_info) {
      QWEN_CHECK(!ids_only, "--ids applies to -p / -f / --stdin");
      info(tok);
    } else if (bench_reps > 0) {
      bench(tok, bench_reps, special);
    } else if (!chat_file.empty()) {
      const auto tmpl = [&] {
        if (chat_template_file.empty()) return qwen::ChatTemplate::for_tokenizer(tok, chat_template);
        std::ifstream in(chat_template_file);
        QWEN_CHECK(in, "cannot open --chat-template-file ", chat_template_file);
        std::stringstream source;
        source << in.rdbuf();
        return qwen::ChatTemplate::from_source(source.str(), tok.bos() >= 0 ? tok.token_bytes(tok.bos()) : "",
                                               tok.eos() >= 0 ? tok.token_bytes(tok.eos()) : "");
      }();
      ordered_json vars;
      try {
        vars = ordered_json::parse(vars_text);
      } catch (const json::exception& e) {
        QWEN_FAIL("--vars is not JSON: ", e.what());
      }
      if (chat_file == "-") {
        for_each_line<ordered_json>(std::cin, [&](const ordered_json& v, size_t) {
          try {
            render_chat(tok, tmpl, v, !no_gen, vars);
          } catch (const qwen::Error& e) {
            std::cout << json{{"error", e.what()}}.dump(-1, ' ', false, json::error_handler_t::replace)
                      << "\n";
          }
        });
      } else {
        std::ifstream in(chat_file);
        QWEN_CHECK(in, "cannot open --chat file ", chat_file);
        ordered_json conv;
        try {
          conv = ordered_json::parse(in);
        } catch (const json::exception& e) {
          QWEN_FAIL(chat_file, ": not JSON: ", e.what());
        }
        render_chat(tok, tmpl, conv, !no_gen, vars);
      }
    } else if (decode) {
      for_each_line(std::cin, [&](const json& v, size_t n) {
        QWEN_CHECK(v.is_array(), "stdin line ", n, ": expected a JSON array of ids");
        std::vector<int32_t> ids;
        for (const json& x : v) {
          QWEN_CHECK(x.is_number_integer(), "stdin line ", n, ": ids must be integers, got ", x.dump());
          const int64_t id = x.get<int64_t>();
          QWEN_CHECK(id >= 0 && id < tok.n_vocab(), "stdin line ", n, ": id ", id,
                     " is outside the vocabulary of ", tok.n_vocab());
          ids.push_back(static_cast<int32_t>(id));
        }
        std::cout << string_json(tok.decode(ids, skip_special)) << "\n";
      });
    } else {
      for_each_line(std::cin, [&](const json& v, size_t n) {
        QWEN_CHECK(v.is_string(), "stdin line ", n, ": expected a JSON string");
        std::cout << ids_json(tok.encode(v.get<std::string>(), special, add_special)) << "\n";
      });
    }
  } catch (const std::exception& e) {
    std::cerr << "qwen-tokenize: " << qwen::error_text(e, verbose) << "\n";
    return 1;
  }
  return 0;
}
