#pragma once

/// \file
/// Small formatting helpers shared by rlobj's `fmt::formatter` specialisations and error
/// messages. Internal: names in `rlobj::detail` may change without notice.

#include <string>
#include <vector>

#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)

namespace rlobj {
namespace detail {

/// `[8, 1]`, the way LibTorch prints sizes.
inline std::string shape_str(c10::IntArrayRef shape) {
  return fmt::format("[{}]", fmt::join(shape.begin(), shape.end(), ", "));
}

/// TorchRL's spelling of a dtype (`float32`, `int64`, `bool`...).
inline std::string dtype_str(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float: return "float32";
    case c10::ScalarType::Double: return "float64";
    case c10::ScalarType::Half: return "float16";
    case c10::ScalarType::BFloat16: return "bfloat16";
    case c10::ScalarType::Long: return "int64";
    case c10::ScalarType::Int: return "int32";
    case c10::ScalarType::Short: return "int16";
    case c10::ScalarType::Char: return "int8";
    case c10::ScalarType::Byte: return "uint8";
    case c10::ScalarType::Bool: return "bool";
    default: return c10::toString(dtype);
  }
}

}  // namespace detail
}  // namespace rlobj
