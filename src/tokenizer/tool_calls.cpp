#include "tokenizer/tool_calls.h"

#include <random>

#include "tokenizer/jinja.h"

namespace qwen {

namespace {

constexpr std::string_view kOpen = kToolCallOpen, kClose = kToolCallClose;

std::string new_call_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += hex[rng() % 16];
  return id;
}

bool is_ws(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// The block's JSON as a call: an object with a string "name" and "arguments" an object (or a
// string holding JSON, passed through). Anything else is not a call.
bool block_to_call(std::string_view body, ToolCall& call) {
  const auto j = nlohmann::ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return false;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get_ref<const std::string&>().empty()) return false;
  auto args = j.find("arguments");
  call.name = name->get<std::string>();
  if (args == j.end() || args->is_null()) {
    call.arguments = "{}";
  } else if (args->is_object()) {
    call.arguments = jinja::dumps(*args);  // Python json.dumps spelling, as the template wrote it
  } else if (args->is_string()) {
    call.arguments = args->get<std::string>();
  } else {
    return false;
  }
  return true;
}

}  // namespace

nlohmann::json tool_call_json(const ToolCall& c, int index) {
  nlohmann::json j = {
      {"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}};
  if (index >= 0) j["index"] = index;
  return j;
}

std::string ToolCallParser::push(std::string_view text) {
  buf_ += text;
  std::string content;
  for (;;) {
    if (!in_block_) {
      const size_t at = buf_.find(kOpen);
      if (at != std::string::npos) {
        content += buf_.substr(0, at);
        buf_.erase(0, at + kOpen.size());
        in_block_ = true;
        continue;
      }
      // Keep the longest tail that could still grow into "<tool_call>".
      size_t keep = 0;
      for (size_t k = std::min(buf_.size(), kOpen.size() - 1); k > 0; --k) {
        if (kOpen.starts_with(std::string_view(buf_).substr(buf_.size() - k))) {
          keep = k;
          break;
        }
      }
      content += buf_.substr(0, buf_.size() - keep);
      buf_.erase(0, buf_.size() - keep);
      break;
    }
    const size_t end = find_close();
    if (end == std::string::npos) break;
    ToolCall call;
    if (block_to_call(buf_.substr(0, end), call)) {
      call.id = new_call_id();
      ready_.push_back(std::move(call));
      ++n_calls_;
      // Whitespace before a call is layout, not content (held back from an earlier push too).
      while (!content.empty() && is_ws(content.back())) content.pop_back();
      if (content.empty()) pending_ws_.clear();
    } else {
      content += std::string(kOpen) + buf_.substr(0, end) + std::string(kClose);
    }
    buf_.erase(0, end + kClose.size());
    leave_block();
  }
  if (content.empty()) return {};
  size_t e = content.size();
  while (e > 0 && is_ws(content[e - 1])) --e;
  if (e == 0) {
    pending_ws_ += content;
    return {};
  }
  std::string out = pending_ws_ + content.substr(0, e);
  pending_ws_ = content.substr(e);
  return out;
}

void ToolCallParser::leave_block() {
  in_block_ = false;
  scan_ = 0;
  in_string_ = escaped_ = false;
}

size_t ToolCallParser::find_close() {
  for (; scan_ < buf_.size(); ++scan_) {
    const char c = buf_[scan_];
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
      continue;
    }
    if (c == '<') {
      const std::string_view rest = std::string_view(buf_).substr(scan_);
      if (rest.starts_with(kClose)) return scan_;
      if (kClose.starts_with(rest)) return std::string::npos;  // maybe the tag, cut by the push
    }
    if (c == '"') in_string_ = true;
  }
  return std::string::npos;
}

std::vector<ToolCall> ToolCallParser::take_calls() {
  return std::exchange(ready_, {});
}

std::string ToolCallParser::flush() {
  std::string rest = in_block_ ? std::string(kOpen) + buf_ : buf_;
  buf_.clear();
  leave_block();
  std::string out = std::exchange(pending_ws_, {}) + rest;
  if (n_calls_ > 0) {
    size_t e = out.size();
    while (e > 0 && is_ws(out[e - 1])) --e;
    out.resize(e);
  }
  return out;
}

ParsedReply parse_tool_calls(std::string_view text) {
  ToolCallParser p;
  ParsedReply r;
  r.content = p.push(text);
  r.content += p.flush();
  r.calls = p.take_calls();
  if (!r.calls.empty()) {
    size_t b = 0;
    while (b < r.content.size() && is_ws(r.content[b])) ++b;
    r.content.erase(0, b);
  }
  return r;
}

}  // namespace qwen
