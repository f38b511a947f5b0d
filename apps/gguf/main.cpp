// qwen-gguf: look inside a GGUF file.
//   qwen-gguf info FILE [--json] [--max-items N]
//       metadata (long arrays and strings summarised), tensor table, totals by type, parameter count.
//       --json prints every array in full unless --max-items is given.
//   qwen-gguf tensor FILE NAME [--rows A:B] [--json] [--out PATH]
//       dequantized values of rows [A, B) of a tensor (a row is ne0 contiguous elements);
//       --out writes them as raw little-endian float32 instead (bit-exact comparisons).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "gguf/gguf.h"
#include "util/check.h"

namespace {

using nlohmann::json;
using qwen::gguf::Array;
using qwen::gguf::File;
using qwen::gguf::TensorInfo;
using qwen::gguf::Value;
using qwen::gguf::ValueType;

json array_json(const Array& a, size_t max_items);

json value_json(const Value& v, size_t max_items) {
  switch (v.type) {
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
      return std::get<uint64_t>(v.v);
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64:
      return std::get<int64_t>(v.v);
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      return std::get<double>(v.v);
    case ValueType::BOOL:
      return std::get<bool>(v.v);
    case ValueType::STRING:
      return std::get<std::string>(v.v);
    case ValueType::ARRAY:
      return array_json(*std::get<std::shared_ptr<Array>>(v.v), max_items);
  }
  return nullptr;
}

// {"elem_type": "STRING", "length": n, "value": [first max_items items]}; nested arrays recurse.
json array_json(const Array& a, size_t max_items) {
  json items = json::array();
  for (size_t i = 0; i < a.items.size() && i < max_items; ++i)
    items.push_back(value_json(a.items[i], max_items));
  return {
      {"elem_type", qwen::gguf::value_type_name(a.elem_type)}, {"length", a.items.size()}, {"value", items}};
}

struct TypeTotal {
  size_t tensors = 0;
  int64_t elements = 0;
  uint64_t bytes = 0;
};

std::map<std::string, TypeTotal> totals_by_type(const File& f) {
  std::map<std::string, TypeTotal> totals;
  for (const TensorInfo& t : f.tensors()) {
    TypeTotal& tt = totals[qwen::type_name(t.type)];
    ++tt.tensors;
    tt.elements += t.n_elements();
    tt.bytes += t.nbytes;
  }
  return totals;
}

int64_t parameter_count(const File& f) {
  int64_t n = 0;
  for (const TensorInfo& t : f.tensors()) n += t.n_elements();
  return n;
}

// JSON text; invalid UTF-8 in a string (possible in hostile files) is replaced, never thrown on.
std::string dump(const json& j) {
  return j.dump(1, ' ', false, json::error_handler_t::replace);
}

void print_info_json(const File& f, std::optional<size_t> max_items) {
  const size_t limit = max_items.value_or(SIZE_MAX);
  json meta = json::array();
  for (const auto& [key, v] : f.metadata()) {
    json e = {{"key", key}, {"type", qwen::gguf::value_type_name(v.type)}};
    if (v.type == ValueType::ARRAY)
      e.update(array_json(*std::get<std::shared_ptr<Array>>(v.v), limit));
    else
      e["value"] = value_json(v, limit);
    meta.push_back(std::move(e));
  }
  json tensors = json::array();
  for (const TensorInfo& t : f.tensors()) {
    tensors.push_back({{"name", t.name},
                       {"type", qwen::type_name(t.type)},
                       {"type_id", uint32_t(t.type)},
                       {"shape", std::vector<int64_t>(t.ne.begin(), t.ne.begin() + t.n_dims)},
                       {"offset", t.offset},
                       {"bytes", t.nbytes}});
  }
  json totals = json::object();
  for (const auto& [name, tt] : totals_by_type(f))
    totals[name] = {{"tensors", tt.tensors}, {"elements", tt.elements}, {"bytes", tt.bytes}};
  const json out = {{"file", f.path()},
                    {"version", f.version()},
                    {"alignment", f.alignment()},
                    {"size", f.size()},
                    {"data_offset", f.data_offset()},
                    {"metadata", meta},
                    {"tensors", tensors},
                    {"totals", totals},
                    {"parameters", parameter_count(f)}};
  std::cout << dump(out) << "\n";
}

// Text rendering of a metadata value; strings longer than 200 bytes (chat templates) are cut.
std::string summarise(const Value& v, size_t max_items) {
  constexpr size_t kMaxString = 200;
  if (v.type != ValueType::STRING || std::get<std::string>(v.v).size() <= kMaxString)
    return v.to_string(max_items);
  const std::string& s = std::get<std::string>(v.v);
  const Value head{ValueType::STRING, s.substr(0, kMaxString)};
  return qwen::str(head.to_string(), "... (", s.size(), " bytes)");
}

void print_info_text(const File& f, size_t max_items) {
  std::printf("file: %s\nGGUF version %u, %llu bytes, alignment %llu, data section at offset %llu\n",
              f.path().c_str(), f.version(), (unsigned long long)f.size(), (unsigned long long)f.alignment(),
              (unsigned long long)f.data_offset());
  std::printf("\nmetadata (%zu keys):\n", f.metadata().size());
  for (const auto& [key, v] : f.metadata()) {
    std::string type = qwen::gguf::value_type_name(v.type);
    if (v.type == ValueType::ARRAY) {
      const Array& a = *std::get<std::shared_ptr<Array>>(v.v);
      type = qwen::str("ARRAY of ", a.items.size(), " ", qwen::gguf::value_type_name(a.elem_type));
    }
    std::printf("  %-40s %-24s %s\n", key.c_str(), type.c_str(), summarise(v, max_items).c_str());
  }
  std::printf("\ntensors (%zu):\n  %-40s %-8s %-24s %14s %14s\n", f.tensors().size(), "name", "type", "shape",
              "offset", "bytes");
  for (const TensorInfo& t : f.tensors())
    std::printf("  %-40s %-8s %-24s %14llu %14llu\n", t.name.c_str(), qwen::type_name(t.type),
                t.shape_str().c_str(), (unsigned long long)t.offset, (unsigned long long)t.nbytes);
  std::printf("\ntotals by type:\n");
  for (const auto& [name, tt] : totals_by_type(f))
    std::printf("  %-8s %6zu tensors %16lld elements %16llu bytes\n", name.c_str(), tt.tensors,
                (long long)tt.elements, (unsigned long long)tt.bytes);
  const int64_t params = parameter_count(f);
  std::printf("\nparameters: %lld (%.3f M)\n", (long long)params, double(params) / 1e6);
}

// "A:B", "A:" or ":B" -> [A, B) within [0, n_rows).
std::pair<int64_t, int64_t> parse_rows(const std::string& spec, int64_t n_rows, const std::string& tensor) {
  const size_t colon = spec.find(':');
  if (colon == std::string::npos) throw qwen::Error(qwen::str("--rows '", spec, "': expected A:B"));
  auto parse = [&](const std::string& s, int64_t fallback) -> int64_t {
    if (s.empty()) return fallback;
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size()) throw qwen::Error(qwen::str("--rows '", spec, "': '", s, "' is not an integer"));
    return v;
  };
  const int64_t a = parse(spec.substr(0, colon), 0);
  const int64_t b = parse(spec.substr(colon + 1), n_rows);
  if (a < 0 || a >= b || b > n_rows)
    throw qwen::Error(qwen::str("--rows ", spec, ": tensor '", tensor, "' has rows 0:", n_rows,
                                ", the range must be non-empty and inside it"));
  return {a, b};
}

void print_tensor(const File& f, const std::string& name, const std::string& rows_spec, bool as_json,
                  const std::string& out_path) {
  const TensorInfo& t = f.tensor(name);
  if (!qwen::type_traits(t.type).supported)
    throw qwen::Error(qwen::str(f.path(), ": tensor '", name, "' has type ", qwen::type_name(t.type),
                                ", which has no CPU dequantization"));
  const int64_t row_len = t.ne[0];
  const int64_t n_rows = t.n_elements() / row_len;
  const auto [a, b] =
      rows_spec.empty() ? std::pair<int64_t, int64_t>{0, n_rows} : parse_rows(rows_spec, n_rows, name);
  const size_t row_bytes = qwen::row_bytes(t.type, row_len);
  std::vector<float> values(size_t((b - a) * row_len));
  for (int64_t r = a; r < b; ++r)
    qwen::dequantize_row(t.type, t.data + size_t(r) * row_bytes, values.data() + (r - a) * row_len, row_len);

  if (!out_path.empty()) {
    std::ofstream out(out_path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * sizeof(float)));
    if (!out)
      throw qwen::Error(qwen::str(out_path, ": cannot write ", values.size() * sizeof(float), " bytes"));
    return;
  }
  if (as_json) {
    json rows = json::array();
    for (int64_t r = 0; r < b - a; ++r)
      rows.push_back(std::vector<float>(values.begin() + r * row_len, values.begin() + (r + 1) * row_len));
    const json out = {{"name", t.name},
                      {"type", qwen::type_name(t.type)},
                      {"shape", std::vector<int64_t>(t.ne.begin(), t.ne.begin() + t.n_dims)},
                      {"rows", {a, b}},
                      {"values", rows}};
    std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    return;
  }
  std::printf("%s %s %s rows %lld:%lld\n", t.name.c_str(), qwen::type_name(t.type), t.shape_str().c_str(),
              (long long)a, (long long)b);
  for (int64_t r = 0; r < b - a; ++r) {
    std::printf("row %lld:", (long long)(a + r));
    for (int64_t i = 0; i < row_len; ++i) std::printf(" %.9g", double(values[size_t(r * row_len + i)]));
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qwen-gguf: inspect GGUF files (metadata, tensor table, dequantized tensors)"};
  app.require_subcommand(1);

  std::string file, tensor_name, rows, out_path;
  bool as_json = false;
  std::optional<size_t> max_items;

  CLI::App* info = app.add_subcommand("info", "metadata, tensor table, totals by type, parameter count");
  info->add_option("file", file, "GGUF file")->required();
  info->add_flag("--json", as_json, "machine-readable output (arrays in full unless --max-items)");
  info->add_option("--max-items", max_items, "array items shown (default 8 in text, all in JSON)");

  CLI::App* tensor = app.add_subcommand("tensor", "dequantized values of one tensor");
  tensor->add_option("file", file, "GGUF file")->required();
  tensor->add_option("name", tensor_name, "tensor name")->required();
  tensor->add_option("--rows", rows, "half-open row range A:B (a row is ne0 elements)");
  tensor->add_flag("--json", as_json, "print values as JSON");
  tensor->add_option("--out", out_path, "write the values as raw little-endian float32 to this file");

  CLI11_PARSE(app, argc, argv);
  try {
    const auto f = File::open(file);
    if (*info) {
      if (as_json)
        print_info_json(*f, max_items);
      else
        print_info_text(*f, max_items.value_or(8));
    } else {
      print_tensor(*f, tensor_name, rows, as_json, out_path);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-gguf: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
