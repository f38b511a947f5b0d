// Errors and checks. Every failure the user can cause (bad file, bad key, bad request) throws
// qwen::Error with a message naming what is wrong; internal preconditions use QWEN_ASSERT.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace qwen {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates any streamable values: str("tensor ", name, " has ", n, " dims").
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

[[noreturn]] void fail_at(const char* file, int line, const std::string& msg);

}  // namespace qwen

// QWEN_CHECK(cond, parts...): throws qwen::Error("file:line: parts...") when cond is false.
#define QWEN_CHECK(cond, ...)                                                   \
  do {                                                                          \
    if (!(cond)) ::qwen::fail_at(__FILE__, __LINE__, ::qwen::str(__VA_ARGS__)); \
  } while (0)

#define QWEN_FAIL(...) ::qwen::fail_at(__FILE__, __LINE__, ::qwen::str(__VA_ARGS__))

// Internal invariant (a bug if it fires, not bad input).
#define QWEN_ASSERT(cond) QWEN_CHECK(cond, "internal check failed: " #cond)
