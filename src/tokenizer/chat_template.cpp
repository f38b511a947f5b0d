// Chat templates: the model's own Jinja template run by the Jinja engine (jinja.h) with the
// variables transformers passes, and the built-in families (each family's Jinja template
// re-expressed in code; the comments quote the template logic each block reproduces), which
// --chat-template NAME selects. tests/python/test_chat_templates.py renders the real template
// strings with jinja2 (HF settings: trim_blocks, lstrip_blocks) and compares both.
#include <ctime>
#include <nlohmann/json.hpp>

#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/check.h"

namespace qwen {

namespace {

constexpr const char* kNames = "chatml, qwen2, qwen2.5, qwen3, llama3, llama3.1, llama3.2, gemma";

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
      if (m.content.find("</think>") != std::string::npos) {
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

ChatTemplate ChatTemplate::from_source(std::string_view src, std::string bos_token, std::string eos_token) {
  if (src.empty()) {
    QWEN_FAIL("the model has no tokenizer.chat_template; pass --chat-template NAME (", kNames, ")");
  }
  ChatTemplate t;
  t.family_ = ChatFamily::kJinja;
  t.bos_token_ = std::move(bos_token);
  t.eos_token_ = std::move(eos_token);
  try {
    t.jinja_ = std::make_shared<const jinja::Template>(src);
  } catch (const Error& e) {
    QWEN_FAIL("cannot use the model's chat template: ", e.what(),
              "; pass --chat-template NAME to use a built-in one (", kNames, ")");
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
  return from_source(tok.chat_template_source(), std::move(bos),
                     tok.eos() >= 0 ? tok.token_bytes(tok.eos()) : std::string());
}

const char* ChatTemplate::name() const {
  switch (family_) {
    case ChatFamily::kJinja:
      return "jinja";
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
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  QWEN_CHECK(vars.is_object(), "chat template variables must be a JSON object, got ", vars.type_name());
  return render(msgs, add_generation_prompt, nlohmann::ordered_json::parse(vars.dump()));
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                 const nlohmann::ordered_json& vars) const {
  QWEN_CHECK(messages.is_array() && !messages.empty(),
             "chat template error: the conversation has no messages");
  QWEN_CHECK(vars.is_object(), "chat template variables must be a JSON object, got ", vars.type_name());
  if (family_ == ChatFamily::kJinja) {
    // transformers' apply_chat_template: render(messages=..., tools=..., documents=...,
    // add_generation_prompt=..., **special_tokens, **kwargs); tools and documents are None when
    // not given.
    nlohmann::ordered_json ctx = {{"tools", nullptr}, {"documents", nullptr}};
    for (auto it = vars.begin(); it != vars.end(); ++it) ctx[it.key()] = it.value();
    ctx["messages"] = messages;
    ctx["add_generation_prompt"] = add_generation_prompt;
    ctx["bos_token"] = bos_token_;
    ctx["eos_token"] = eos_token_;
    return jinja_->render(ctx);
  }
  check_no_tools(nlohmann::json::parse(vars.dump()));
  std::vector<ChatMessage> msgs;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    QWEN_CHECK(m.is_object() && m.contains("role") && m["role"].is_string(), "chat: messages[", i,
               "] needs a string 'role'");
    for (auto it = m.begin(); it != m.end(); ++it) {
      QWEN_CHECK(it.key() == "role" || it.key() == "content" || it.value().is_null(), "chat: messages[", i,
                 "].", it.key(), " is not rendered by the built-in '", name(),
                 "' template (the model's own template renders it)");
    }
    const auto content = m.find("content");
    QWEN_CHECK(content == m.end() || content->is_string() || content->is_null(), "chat: messages[", i,
               "].content must be a string for the built-in '", name(), "' template");
    msgs.push_back({m["role"].get<std::string>(),
                    content == m.end() || content->is_null() ? std::string() : content->get<std::string>()});
  }
  switch (family_) {
    case ChatFamily::kJinja:
      break;
    case ChatFamily::kChatML:
      return render_chatml(msgs, add_generation_prompt, default_system_, tool_responses_);
    case ChatFamily::kQwen3:
      return render_qwen3(msgs, add_generation_prompt, nlohmann::json::parse(vars.dump()));
    case ChatFamily::kLlama3:
      return render_llama3(msgs, add_generation_prompt, bos_token_);
    case ChatFamily::kLlama31:
      return render_llama31(msgs, add_generation_prompt, bos_token_, llama_date_now_,
                            nlohmann::json::parse(vars.dump()));
    case ChatFamily::kGemma:
      return render_gemma(msgs, add_generation_prompt, bos_token_, gemma_fold_system_);
  }
  QWEN_FAIL("unhandled chat family");
}

}  // namespace qwen
