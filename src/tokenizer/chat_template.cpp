// Chat templates: each family's Jinja template re-expressed in code. The comments quote the
// template logic each block reproduces; tests/python/test_chat_templates.py renders the real
// template strings with jinja2 (HF settings: trim_blocks, lstrip_blocks) and compares.
#include <ctime>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/check.h"

namespace qwen {

namespace {

constexpr const char* kNames = "chatml, qwen2, qwen2.5, qwen3, llama3, llama3.1, llama3.2, gemma";

bool contains(std::string_view s, std::string_view what) {
  return s.find(what) != s.npos;
}

// Python's str.isspace(): the Unicode White_Space characters plus U+001C..U+001F.
bool py_space(uint32_t cp) {
  return unicode::is_space(cp) || (cp >= 0x1C && cp <= 0x1F);
}

// Python str.strip() with no argument (what Jinja's `trim` filter calls).
std::string py_strip(std::string_view s) {
  size_t begin = s.size(), end = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    if (py_space(unicode::next_cp(s, i))) continue;
    if (begin == s.size()) begin = at;
    end = i;
  }
  return begin < end ? std::string(s.substr(begin, end - begin)) : std::string();
}

// Python str.lstrip(chars) / rstrip(chars) / strip(chars) for a set of ASCII characters.
std::string_view lstrip(std::string_view s, std::string_view chars) {
  const size_t b = s.find_first_not_of(chars);
  return b == s.npos ? std::string_view() : s.substr(b);
}
std::string_view rstrip(std::string_view s, std::string_view chars) {
  const size_t e = s.find_last_not_of(chars);
  return e == s.npos ? std::string_view() : s.substr(0, e + 1);
}

// Python s.split(sep)[0] and s.split(sep)[-1].
std::string_view split_first(std::string_view s, std::string_view sep) {
  const size_t p = s.find(sep);
  return p == s.npos ? s : s.substr(0, p);
}
std::string_view split_last(std::string_view s, std::string_view sep) {
  const size_t p = s.rfind(sep);
  return p == s.npos ? s : s.substr(p + sep.size());
}

// The default system prompt a ChatML template writes as a literal
// '<|im_start|>system\n...<|im_end|>' (Qwen2: "You are a helpful assistant."); empty if none.
// Templates write the newline either as the escape \n or as a raw newline inside the string.
std::string chatml_default_system(std::string_view src) {
  constexpr std::string_view kHead = "<|im_start|>system", kEnd = "<|im_end|>";
  for (size_t p = src.find(kHead); p != src.npos; p = src.find(kHead, p + 1)) {
    size_t start = p + kHead.size();
    if (src.substr(start).starts_with("\\n")) {
      start += 2;
    } else if (src.substr(start).starts_with("\n")) {
      start += 1;
    } else {
      continue;
    }
    const size_t end = src.find(kEnd, start);
    if (end == src.npos) break;
    std::string_view lit = src.substr(start, end - start);
    // Only a plain literal counts; '<|im_start|>system\n' + messages[0]... has quotes after it.
    if (lit.empty() || lit.find_first_of("'\"+{}") != lit.npos) continue;
    std::string out;
    for (size_t i = 0; i < lit.size(); ++i) {
      if (lit[i] == '\\' && i + 1 < lit.size()) {
        const char e = lit[++i];
        out.push_back(e == 'n' ? '\n' : e == 't' ? '\t' : e);
      } else {
        out.push_back(lit[i]);
      }
    }
    return out;
  }
  return {};
}

void check_no_tools(const nlohmann::json& vars) {
  for (const char* key : {"tools", "custom_tools", "builtin_tools"}) {
    auto it = vars.find(key);
    QWEN_CHECK(it == vars.end() || it->is_null() || (it->is_array() && it->empty()),
               "chat template variable '", key, "' is not supported by the built-in renderers");
  }
}

// ---- renderers --------------------------------------------------------------------------------

std::string render_chatml(const std::vector<ChatMessage>& msgs, bool add_gen, const std::string& def_system,
                          bool tool_responses) {
  std::string out;
  // {% if messages[0]['role'] != 'system' %} default system turn {% endif %}
  if (!def_system.empty() && msgs[0].role != "system") {
    out += "<|im_start|>system\n" + def_system + "<|im_end|>\n";
  }
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (tool_responses && m.role == "tool") {
      // Consecutive tool turns share one user turn, each wrapped in <tool_response>.
      if (i == 0 || msgs[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i + 1 == msgs.size() || msgs[i + 1].role != "tool") out += "<|im_end|>\n";
    } else if (!tool_responses || m.role == "user" || m.role == "system" || m.role == "assistant") {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    }
  }
  if (add_gen) out += "<|im_start|>assistant\n";
  return out;
}

std::string render_qwen3(const std::vector<ChatMessage>& msgs, bool add_gen, const nlohmann::json& vars) {
  std::string out;
  if (msgs[0].role == "system") out += "<|im_start|>system\n" + msgs[0].content + "<|im_end|>\n";
  // last_query_index: the last user turn that is not a wrapped tool response.
  const size_t n = msgs.size();
  size_t last_query = n - 1;
  for (size_t k = n; k-- > 0;) {
    const ChatMessage& m = msgs[k];
    const bool tool_wrapped =
        m.content.starts_with("<tool_response>") && m.content.ends_with("</tool_response>");
    if (m.role == "user" && !tool_wrapped) {
      last_query = k;
      break;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == "user" || (m.role == "system" && i != 0)) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    } else if (m.role == "assistant") {
      std::string_view content = m.content;
      std::string_view reasoning;
      if (contains(m.content, "</think>")) {
        content = lstrip(split_last(m.content, "</think>"), "\n");
        reasoning = lstrip(split_last(rstrip(split_first(m.content, "</think>"), "\n"), "<think>"), "\n");
      }
      // Reasoning is kept only for turns after the last user query (the current tool loop).
      if (i > last_query && (i + 1 == n || !reasoning.empty())) {
        out += "<|im_start|>" + m.role + "\n<think>\n" + std::string(lstrip(rstrip(reasoning, "\n"), "\n")) +
               "\n</think>\n\n" + std::string(lstrip(content, "\n"));
      } else {
        out += "<|im_start|>" + m.role + "\n" + std::string(content);
      }
      out += "<|im_end|>\n";
    } else if (m.role == "tool") {
      if (i == 0 || msgs[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + m.content + "\n</tool_response>";
      if (i + 1 == n || msgs[i + 1].role != "tool") out += "<|im_end|>\n";
    }
  }
  if (add_gen) {
    out += "<|im_start|>assistant\n";
    // {% if enable_thinking is defined and enable_thinking is false %}: only the boolean false.
    auto it = vars.find("enable_thinking");
    if (it != vars.end() && it->is_boolean() && !it->get<bool>()) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

std::string render_llama3(const std::vector<ChatMessage>& msgs, bool add_gen, const std::string& bos) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (i == 0) out += bos;
    out += "<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n" + py_strip(msgs[i].content) +
           "<|eot_id|>";
  }
  if (add_gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Llama 3.1 / 3.2 without tools: the system turn always comes first, dated; "tool"/"ipython"
// turns carry their content as JSON (a string is iterable in Jinja, so `tojson` applies).
std::string render_llama31(const std::vector<ChatMessage>& msgs, bool add_gen, const std::string& bos,
                           bool date_now, const nlohmann::json& vars) {
  std::string date = "26 Jul 2024";
  if (auto it = vars.find("date_string"); it != vars.end()) {
    QWEN_CHECK(it->is_string(), "chat template variable date_string must be a string, got ", it->dump());
    date = it->get<std::string>();
  } else if (date_now) {
    // strftime_now("%d %b %Y") as transformers defines it: local time, C locale month names.
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[32];
    std::strftime(buf, sizeof buf, "%d %b %Y", &local);
    date = buf;
  }
  size_t first = 0;
  std::string system;
  if (msgs[0].role == "system") {
    system = py_strip(msgs[0].content);
    first = 1;
  }
  std::string out = bos +
                    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n" +
                    "Today Date: " + date + "\n\n" + system + "<|eot_id|>";
  for (size_t i = first; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == "tool" || m.role == "ipython") {
      out +=
          "<|start_header_id|>ipython<|end_header_id|>\n\n" + nlohmann::json(m.content).dump() + "<|eot_id|>";
    } else {
      out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + py_strip(m.content) + "<|eot_id|>";
    }
  }
  if (add_gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_gemma(const std::vector<ChatMessage>& msgs, bool add_gen, const std::string& bos,
                         bool fold_system) {
  std::string out = bos;
  size_t first = 0;
  std::string first_user_prefix;
  if (msgs[0].role == "system") {
    QWEN_CHECK(fold_system, "chat template error: System role not supported");
    first_user_prefix = msgs[0].content + "\n\n";
    first = 1;
  }
  for (size_t i = first; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    const size_t index0 = i - first;
    QWEN_CHECK((m.role == "user") == (index0 % 2 == 0),
               "chat template error: Conversation roles must alternate user/assistant/user/assistant/...");
    const std::string role = m.role == "assistant" ? "model" : m.role;
    out += "<start_of_turn>" + role + "\n" + (index0 == 0 ? first_user_prefix : "") + py_strip(m.content) +
           "<end_of_turn>\n";
  }
  if (add_gen) out += "<start_of_turn>model\n";
  return out;
}

}  // namespace

ChatTemplate ChatTemplate::from_source(std::string_view src, std::string bos_token) {
  ChatTemplate t;
  t.bos_token_ = std::move(bos_token);
  auto unknown = [&](const char* why) {
    QWEN_FAIL("unknown chat template (", why, "); pass --chat-template NAME to use a built-in one (", kNames,
              "). Template starts with: ", std::string(src.substr(0, 120)));
  };
  if (src.empty()) {
    QWEN_FAIL("the model has no tokenizer.chat_template; pass --chat-template NAME (", kNames, ")");
  }
  if (contains(src, "<|im_start|>")) {
    if (contains(src, "<think>")) {
      t.family_ = ChatFamily::kQwen3;
    } else {
      t.family_ = ChatFamily::kChatML;
      t.default_system_ = chatml_default_system(src);
      t.tool_responses_ = contains(src, "<tool_response>");
    }
  } else if (contains(src, "<|start_header_id|>") && contains(src, "<|eot_id|>")) {
    if (contains(src, "Cutting Knowledge Date")) {
      t.family_ = ChatFamily::kLlama31;
      t.llama_date_now_ = contains(src, "strftime_now");
    } else {
      if (contains(src, "tool")) unknown("Llama 3 variant with tool calling");
      t.family_ = ChatFamily::kLlama3;
    }
  } else if (contains(src, "<start_of_turn>")) {
    t.family_ = ChatFamily::kGemma;
    t.gemma_fold_system_ = contains(src, "first_user_prefix");
  } else {
    unknown("not ChatML, Qwen3, Llama 3 or Gemma");
  }
  return t;
}

ChatTemplate ChatTemplate::from_name(std::string_view name, std::string bos_token) {
  ChatTemplate t;
  t.bos_token_ = std::move(bos_token);
  if (name == "chatml") {
    t.family_ = ChatFamily::kChatML;
  } else if (name == "qwen2") {
    t.family_ = ChatFamily::kChatML;
    t.default_system_ = "You are a helpful assistant.";
  } else if (name == "qwen2.5") {
    t.family_ = ChatFamily::kChatML;
    t.default_system_ = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
    t.tool_responses_ = true;
  } else if (name == "qwen3") {
    t.family_ = ChatFamily::kQwen3;
  } else if (name == "llama3") {
    t.family_ = ChatFamily::kLlama3;
  } else if (name == "llama3.1" || name == "llama3.2") {
    t.family_ = ChatFamily::kLlama31;
    t.llama_date_now_ = name == "llama3.2";
  } else if (name == "gemma") {
    t.family_ = ChatFamily::kGemma;
  } else {
    QWEN_FAIL("unknown chat template name '", name, "' (known: ", kNames, ")");
  }
  return t;
}

ChatTemplate ChatTemplate::for_tokenizer(const Tokenizer& tok, std::string_view forced_name) {
  std::string bos = tok.bos() >= 0 ? tok.token_bytes(tok.bos()) : std::string();
  if (!forced_name.empty()) return from_name(forced_name, std::move(bos));
  return from_source(tok.chat_template_source(), std::move(bos));
}

const char* ChatTemplate::name() const {
  switch (family_) {
    case ChatFamily::kChatML:
      return default_system_.empty() ? "chatml" : tool_responses_ ? "qwen2.5" : "qwen2";
    case ChatFamily::kQwen3:
      return "qwen3";
    case ChatFamily::kLlama3:
      return "llama3";
    case ChatFamily::kLlama31:
      return llama_date_now_ ? "llama3.2" : "llama3.1";
    case ChatFamily::kGemma:
      return "gemma";
  }
  return "?";
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  return render(messages, add_generation_prompt, nlohmann::json::object());
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const nlohmann::json& vars) const {
  QWEN_CHECK(!messages.empty(), "chat template error: the conversation has no messages");
  QWEN_CHECK(vars.is_object(), "chat template variables must be a JSON object, got ", vars.type_name());
  check_no_tools(vars);
  switch (family_) {
    case ChatFamily::kChatML:
      return render_chatml(messages, add_generation_prompt, default_system_, tool_responses_);
    case ChatFamily::kQwen3:
      return render_qwen3(messages, add_generation_prompt, vars);
    case ChatFamily::kLlama3:
      return render_llama3(messages, add_generation_prompt, bos_token_);
    case ChatFamily::kLlama31:
      return render_llama31(messages, add_generation_prompt, bos_token_, llama_date_now_, vars);
    case ChatFamily::kGemma:
      return render_gemma(messages, add_generation_prompt, bos_token_, gemma_fold_system_);
  }
  QWEN_FAIL("unhandled chat family");
}

}  // namespace qwen
