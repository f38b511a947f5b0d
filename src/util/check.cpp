#include "util/check.h"

#include <cstring>

namespace qwen {

[[noreturn]] void fail_at(const char* file, int line, const std::string& msg) {
  const char* base = std::strrchr(file, '/');
  throw Error(str(msg, " [", base ? base + 1 : file, ":", line, "]"));
}

}  // namespace qwen
