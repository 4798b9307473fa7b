#pragma once

/// \file
/// `rlobj::detail::physical_memory_bytes`: the machine's memory, the bound that size options
/// are checked against before anything that large is allocated.

#include <cstdint>
#include <limits>

#include <unistd.h>

namespace rlobj {
namespace detail {

/// The machine's physical memory in bytes (`sysconf`), or the largest `int64_t` where it cannot
/// be read (then nothing is refused for its size).
inline int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return std::numeric_limits<int64_t>::max();
  if (pages > std::numeric_limits<int64_t>::max() / page_size) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(pages) * static_cast<int64_t>(page_size);
}

}  // namespace detail
}  // namespace rlobj
