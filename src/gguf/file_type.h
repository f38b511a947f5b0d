// The weight type a user calls a GGUF file by ("Q4_K_M"), for tool output such as qwen-bench's
// type column. One place, so every tool names a file the same way.
#pragma once

#include <string>

namespace qwen::gguf {

class File;

// general.file_type read as llama.cpp's ftype numbers (15 = MOSTLY_Q4_K_M -> "Q4_K_M"). A file
// without that key, or with a number this table does not know, is named by the ggml type holding
// the most elements among its 2-D tensors (a Q4_K_M file mixes Q4_K and Q6_K matrices, so the
// type of one chosen matrix is not the file's name).
std::string file_type_name(const File& f);

}  // namespace qwen::gguf
