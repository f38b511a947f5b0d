// Errors and checks. Every failure the user can cause (bad file, bad key, bad request) throws
// qwen::Error with a message naming what is wrong; internal preconditions use QWEN_ASSERT.
#pragma once

#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>

namespace qwen {

// what() is the message alone, the words a user acts on; where() is the source location that
// raised it ("session.cpp:399", empty when unknown), which only a developer needs (--verbose).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg, std::string where = {})
      : std::runtime_error(msg), where_(std::move(where)) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

// Concatenates any streamable values: str("tensor ", name, " has ", n, " dims").
template <class... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

[[noreturn]] void fail_at(const char* file, int line, const std::string& msg);

// The text an app prints for a caught exception: the message, and with `verbose` the source
// location of a qwen::Error after it ("... [session.cpp:399]").
std::string error_text(const std::exception& e, bool verbose);

}  // namespace qwen

// QWEN_CHECK(cond, parts...): throws qwen::Error(parts..., where = "file:line") when cond is false.
#define QWEN_CHECK(cond, ...)                                                   \
  do {                                                                          \
    if (!(cond)) ::qwen::fail_at(__FILE__, __LINE__, ::qwen::str(__VA_ARGS__)); \
  } while (0)

#define QWEN_FAIL(...) ::qwen::fail_at(__FILE__, __LINE__, ::qwen::str(__VA_ARGS__))

// Internal invariant (a bug if it fires, not bad input).
#define QWEN_ASSERT(cond) QWEN_CHECK(cond, "internal check failed: " #cond)
