#pragma once

/// \file
/// Shared implementation of `set_keys` (losses and value estimators rename the keys they read
/// by name, as TorchRL's `set_keys(**kwargs)` does). Internal.

#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)

#include "rlobj/tensordict.h"

namespace rlobj {
namespace detail {

/// Assigns every `name -> key` of `keys` to the slot of that name. Unknown names throw a
/// `c10::ValueError` listing the accepted ones, before anything is assigned.
inline void set_named_keys(const char* where, const std::map<std::string, NestedKey>& keys,
                           const std::vector<std::pair<const char*, NestedKey*>>& slots) {
  auto find = [&](const std::string& name) -> NestedKey* {
    for (const auto& slot : slots) {
      if (name == slot.first) return slot.second;
    }
    return nullptr;
  };
  for (const auto& kv : keys) {
    if (find(kv.first) != nullptr) continue;
    std::vector<std::string> names;
    for (const auto& slot : slots) names.emplace_back(slot.first);
    TORCH_CHECK_VALUE(false, where, ".set_keys: \"", kv.first, "\" is not an accepted key; expected one of ",
                      fmt::format("{}", fmt::join(names, ", ")));
  }
  for (const auto& kv : keys) *find(kv.first) = kv.second;
}

}  // namespace detail
}  // namespace rlobj
