#include "util/check.h"

#include <cstring>

namespace qwen {

[[noreturn]] void fail_at(const char* file, int line, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  throw Error(msg, str(base ? base + 1 : file, ":", line));
}

std::string error_text(const std::exception& e, bool verbose) {
  const auto* q = dynamic_cast<const Error*>(&e);
  if (!verbose || q == nullptr || q->where().empty()) return e.what();
  return str(e.what(), " [", q->where(), "]");
}

}  // namespace qwen
