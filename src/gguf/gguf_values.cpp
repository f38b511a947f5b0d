// Metadata values: names, rendering, and the typed getters of gguf::File.
#include <charconv>
#include <cstdio>
#include <type_traits>
#include <utility>

#include "gguf/gguf.h"
#include "util/check.h"

namespace qwen::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
      return "UINT8";
    case ValueType::INT8:
      return "INT8";
    case ValueType::UINT16:
      return "UINT16";
    case ValueType::INT16:
      return "INT16";
    case ValueType::UINT32:
      return "UINT32";
    case ValueType::INT32:
      return "INT32";
    case ValueType::FLOAT32:
      return "FLOAT32";
    case ValueType::BOOL:
      return "BOOL";
    case ValueType::STRING:
      return "STRING";
    case ValueType::ARRAY:
      return "ARRAY";
    case ValueType::UINT64:
      return "UINT64";
    case ValueType::INT64:
      return "INT64";
    case ValueType::FLOAT64:
      return "FLOAT64";
  }
  return "UNKNOWN";
}

namespace {

// Shortest text that reads back to the same value (FLOAT32 values are stored widened to double).
std::string format_float(double d, bool is_f32) {
  char buf[64];
  const auto r =
      is_f32 ? std::to_chars(buf, buf + sizeof buf, float(d)) : std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, r.ptr);
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char esc[8];
          std::snprintf(esc, sizeof esc, "\\x%02x", unsigned(static_cast<unsigned char>(c)));
          out += esc;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

bool is_unsigned(ValueType t) {
  return t == ValueType::UINT8 || t == ValueType::UINT16 || t == ValueType::UINT32 || t == ValueType::UINT64;
}
bool is_signed(ValueType t) {
  return t == ValueType::INT8 || t == ValueType::INT16 || t == ValueType::INT32 || t == ValueType::INT64;
}
bool is_float(ValueType t) {
  return t == ValueType::FLOAT32 || t == ValueType::FLOAT64;
}

template <class T>
const char* cpp_type_name() {
  if constexpr (std::is_same_v<T, bool>)
    return "bool";
  else if constexpr (std::is_same_v<T, int8_t>)
    return "int8";
  else if constexpr (std::is_same_v<T, uint8_t>)
    return "uint8";
  else if constexpr (std::is_same_v<T, int16_t>)
    return "int16";
  else if constexpr (std::is_same_v<T, uint16_t>)
    return "uint16";
  else if constexpr (std::is_same_v<T, int32_t>)
    return "int32";
  else if constexpr (std::is_same_v<T, uint32_t>)
    return "uint32";
  else if constexpr (std::is_same_v<T, int64_t>)
    return "int64";
  else if constexpr (std::is_same_v<T, uint64_t>)
    return "uint64";
  else if constexpr (std::is_same_v<T, float>)
    return "float";
  else if constexpr (std::is_same_v<T, double>)
    return "double";
  else if constexpr (std::is_same_v<T, std::string>)
    return "string";
  else
    return "array";
}

// Converts one scalar value to T. Returns an empty string on success, else why it failed.
template <class T>
std::string convert_scalar(const Value& v, T& out) {
  if constexpr (std::is_same_v<T, bool>) {
    if (v.type != ValueType::BOOL) return str("has type ", value_type_name(v.type), ", expected BOOL");
    out = std::get<bool>(v.v);
  } else if constexpr (std::is_integral_v<T>) {
    if (is_unsigned(v.type)) {
      const uint64_t x = std::get<uint64_t>(v.v);
      if (!std::in_range<T>(x)) return str("value ", x, " does not fit in ", cpp_type_name<T>());
      out = T(x);
    } else if (is_signed(v.type)) {
      const int64_t x = std::get<int64_t>(v.v);
      if (!std::in_range<T>(x)) return str("value ", x, " does not fit in ", cpp_type_name<T>());
      out = T(x);
    } else {
      return str("has type ", value_type_name(v.type), ", expected an integer");
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    if (is_float(v.type))
      out = T(std::get<double>(v.v));
    else if (is_unsigned(v.type))
      out = T(std::get<uint64_t>(v.v));
    else if (is_signed(v.type))
      out = T(std::get<int64_t>(v.v));
    else
      return str("has type ", value_type_name(v.type), ", expected a number");
  } else {
    static_assert(std::is_same_v<T, std::string>);
    if (v.type != ValueType::STRING) return str("has type ", value_type_name(v.type), ", expected STRING");
    out = std::get<std::string>(v.v);
  }
  return {};
}

template <class T>
struct is_vector : std::false_type {};
template <class E>
struct is_vector<std::vector<E>> : std::true_type {};

}  // namespace

std::string Value::to_string(size_t max_items) const {
  switch (type) {
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64:
      return std::to_string(std::get<uint64_t>(v));
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64:
      return std::to_string(std::get<int64_t>(v));
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      return format_float(std::get<double>(v), type == ValueType::FLOAT32);
    case ValueType::BOOL:
      return std::get<bool>(v) ? "true" : "false";
    case ValueType::STRING:
      return quote(std::get<std::string>(v));
    case ValueType::ARRAY: {
      const Array& a = *std::get<std::shared_ptr<Array>>(v);
      const size_t n = a.items.size();
      std::string s = "[";
      if (n > max_items) s += str(value_type_name(a.elem_type), " x ", n, ": ");
      for (size_t i = 0; i < n && i < max_items; ++i) s += (i ? ", " : "") + a.items[i].to_string(max_items);
      if (n > max_items) s += ", ...";
      return s + "]";
    }
  }
  return "?";
}

template <class T>
T File::get(std::string_view key) const {
  const Value* v = find(key);
  if (!v) throw Error(str(path_, ": metadata key '", key, "' not found"));
  T out{};
  if constexpr (is_vector<T>::value) {
    using E = typename T::value_type;
    if (v->type != ValueType::ARRAY)
      throw Error(str(path_, ": metadata key '", key, "' has type ", value_type_name(v->type),
                      ", expected an array of ", cpp_type_name<E>()));
    const Array& a = *std::get<std::shared_ptr<Array>>(v->v);
    out.reserve(a.items.size());
    for (size_t i = 0; i < a.items.size(); ++i) {
      E e{};
      const std::string why = convert_scalar(a.items[i], e);
      if (!why.empty())
        throw Error(str(path_, ": metadata key '", key, "' item ", i, " (array of ",
                        value_type_name(a.elem_type), ") ", why));
      out.push_back(std::move(e));
    }
  } else {
    const std::string why = convert_scalar(*v, out);
    if (!why.empty()) throw Error(str(path_, ": metadata key '", key, "' ", why));
  }
  return out;
}

template bool File::get<bool>(std::string_view) const;
template int8_t File::get<int8_t>(std::string_view) const;
template uint8_t File::get<uint8_t>(std::string_view) const;
template int16_t File::get<int16_t>(std::string_view) const;
template uint16_t File::get<uint16_t>(std::string_view) const;
template int32_t File::get<int32_t>(std::string_view) const;
template uint32_t File::get<uint32_t>(std::string_view) const;
template int64_t File::get<int64_t>(std::string_view) const;
template uint64_t File::get<uint64_t>(std::string_view) const;
template float File::get<float>(std::string_view) const;
template double File::get<double>(std::string_view) const;
template std::string File::get<std::string>(std::string_view) const;
template std::vector<std::string> File::get<std::vector<std::string>>(std::string_view) const;
template std::vector<int32_t> File::get<std::vector<int32_t>>(std::string_view) const;
template std::vector<uint32_t> File::get<std::vector<uint32_t>>(std::string_view) const;
template std::vector<int64_t> File::get<std::vector<int64_t>>(std::string_view) const;
template std::vector<float> File::get<std::vector<float>>(std::string_view) const;
template std::vector<double> File::get<std::vector<double>>(std::string_view) const;

}  // namespace qwen::gguf
