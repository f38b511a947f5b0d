// The repository's Qwen tokenizer test data (tests/data/qwen2-tokenizer) for the C++ unit tests:
// scripts/tokenizer_data.py unpacks it into the cache once and prints the folder.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>

namespace qwen::test {

// The command that unpacks the data (named in skip messages).
inline std::string tokenizer_data_command() {
  return "python3 " + (std::filesystem::path(QWEN_SOURCE_DIR) / "scripts" / "tokenizer_data.py").string();
}

// The folder holding tokenizer.json, or "" when it could not be unpacked (no python3, say).
inline std::string tokenizer_data_dir() {
  std::string dir;
  if (FILE* p = ::popen(tokenizer_data_command().c_str(), "r")) {
    char buf[4096];
    while (std::fgets(buf, sizeof buf, p)) dir += buf;
    if (::pclose(p) != 0) dir.clear();
  }
  while (!dir.empty() && (dir.back() == '\n' || dir.back() == '\r')) dir.pop_back();
  return dir;
}

}  // namespace qwen::test
